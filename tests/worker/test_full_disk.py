"""A full checkpoint store under a real worker process: the store on a real tmpfs filled to
its last byte (the kernel's own ENOSPC) before the job starts. The job starts (its record
marked started with no block to spare), trains on (its sample grids and resumable states
are skipped), waits to publish until there is space, and then publishes one whole
version; a cancel still stops it while it waits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from aae.config import AAEConfig, Mode, Precision
from aae.store import CheckpointStore
from aae_jobs.contract import stop_key
from aae_jobs.records import JobRecord, read_record, write_record

QUICK = AAEConfig(mode=Mode.UNSUPERVISED, epochs=2, hidden=64, validation_size=300,
                  precision=Precision.FP32)


@pytest.mark.parametrize("then", ["space freed", "cancelled"])
def test_a_job_on_a_full_store_trains_on_and_waits_to_publish(
        small_disk, redis_server, workers, enqueue_train, wait_for, tmp_path: Path,
        then: str) -> None:
    root = small_disk.mount(16 << 20)
    model_dir = root / "models"
    model_dir.mkdir()
    queue = Queue("training", connection=Redis.from_url(redis_server.url),
                  serializer=JSONSerializer)
    job = enqueue_train(queue, "full", QUICK)
    write_record(model_dir, JobRecord(  # as the API accepted it
        id=job.id, queue="training", name="full", config=QUICK.to_dict(), dataset="mnist",
        job_timeout_s=600, retries=2, result_ttl_s=3600, description="train full"))
    small_disk.fill(root)  # the worker marks the record started on a full disk
    log = tmp_path / "worker.log"
    workers.start(redis_server.url, model_dir, log=log)

    def publishing() -> bool:
        job.refresh()
        assert job.get_status() in (JobStatus.QUEUED, JobStatus.STARTED), log.read_text()
        return job.meta.get("stage") == "publishing"

    wait_for(publishing, timeout=120, what="the job to reach publishing")
    time.sleep(2.0)  # it keeps trying
    job.refresh()
    assert job.get_status() == JobStatus.STARTED
    text = log.read_text()
    assert "the samples of epoch 1 not saved, training on" in text
    assert "the state of epoch 1 not saved, training on" in text
    assert "is full" in text and "publishing again in" in text
    store = CheckpointStore(model_dir)
    assert "full" not in store.models()
    assert read_record(model_dir, job.id).started

    if then == "space freed":
        (root / ".filler").unlink()
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=60,
                 what="the job to finish")
        assert job.return_value() == {"model": "full", "version": 1}
        assert store.versions("full") == [1]
        check = store.verify("full", 1)
        assert check.verified and check.ok
        assert store.info("full", 1).metrics["job_id"] == job.id
    else:
        queue.connection.set(stop_key(job.id), 1)
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, timeout=60,
                 what="the job to stop")
        assert "full" not in store.models()
    assert list(model_dir.rglob(".tmp-*")) == []
