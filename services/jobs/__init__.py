"""Think Max batch jobs on Celery: batches and their requests in SQL (the source of truth), one Celery task per
request that claims it with a lease and runs it on a model worker, a reaper for lost messages and dead workers."""
