"""Moved to :mod:`airflow_provider_smartflows.operators.batch.reconcile`; this path keeps working.

``BatchReconcileMixin`` (a part of the batch operator, unusable on its own) is now the object
:class:`~airflow_provider_smartflows.operators.batch.reconcile.StartReconciler` that the batch's
engine holds.
"""

from __future__ import annotations

from airflow_provider_smartflows.operators.batch.reconcile import Ambiguous, StartReconciler

__all__ = ["Ambiguous", "StartReconciler"]
