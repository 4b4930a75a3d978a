"""System test: the provider in real Airflow services (scheduler, triggerer, api-server)."""
