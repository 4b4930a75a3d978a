"""Deployment tests: the provider in a production-shaped Airflow (PostgreSQL, Celery, two triggerers)."""
