"""The platform's services around the model workers: batch jobs on Celery (`jobs`)."""
