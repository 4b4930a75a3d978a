"""Apache Airflow provider for Smart Flows (Invenso / Xpertdoc / Experlogix)."""

from __future__ import annotations

__version__ = "1.0.0"
