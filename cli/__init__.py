"""The ``aae`` command line: local training, the checkpoint store, and (later) the service."""
