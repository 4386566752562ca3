"""Batch mode: label through the providers' batch APIs at half the price.

`labeler.job.run_job` runs a `Job` with ``batch=True`` through `BatchRunner`, the batch
labeling strategy; `BatchClient` is the seam each provider implements (OpenAI and
Anthropic here, named in the teacher registry). Every step is journaled in the store
first (journal.py), so a crash, a kill -9 or a cron run that returns at once (``no_wait``)
is resumed by the next run without submitting any request twice.
"""

from labeler.batch.base import BatchClient, ItemResult, RemoteBatch
from labeler.batch.clients import cancel_batch, client_for, list_batches, make_client
from labeler.batch.runner import BatchError, BatchRunner, BatchSummary

__all__ = [
    "BatchClient",
    "BatchError",
    "BatchRunner",
    "BatchSummary",
    "ItemResult",
    "RemoteBatch",
    "cancel_batch",
    "client_for",
    "list_batches",
    "make_client",
]
