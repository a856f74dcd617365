"""The ``aae`` command line: local training, the checkpoint store, and running the
service: the API, training workers and an embedded Redis."""
