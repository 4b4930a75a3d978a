"""Moved to :mod:`airflow_provider_smartflows.operators.batch.outcomes`; this path keeps working.

``BatchOutcomesMixin`` (a part of the batch operator, unusable on its own) is now the object
:class:`~airflow_provider_smartflows.operators.batch.outcomes.RecordOutcomes` that the batch's
engine holds.
"""

from __future__ import annotations

from airflow_provider_smartflows.operators.batch.outcomes import RecordOutcomes

__all__ = ["RecordOutcomes"]
