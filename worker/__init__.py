"""RQ workers that train models from the queue and publish them to the checkpoint store.

``python -m worker`` (or ``aae worker``) runs one. The service enqueues jobs by the
dotted name ``"worker.tasks.train"``; this package depends on ``aae`` and ``rq``,
never on the service.
"""
