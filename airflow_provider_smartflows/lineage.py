"""OpenLineage facets of the operators (imported only when the OpenLineage provider calls them).

The Smart Flows execution is the run's ``externalQuery`` facet (the standard facet for "this run
is job X in another system": ``externalQueryId`` the execution id, ``source`` the Smart Flows base
URL). Written objects are output datasets named as the storage providers name theirs
(:func:`airflow_provider_smartflows.storage.lineage_dataset`), with their size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.storage import lineage_dataset

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_smartflows.models import DownloadedDocument

#: Key of the run facet that carries the Smart Flows execution.
EXECUTION_FACET = "externalQuery"


def operator_lineage(
    *,
    execution_id: str | None,
    base_url: str,
    written: Iterable[tuple[ObjectStoragePath, DownloadedDocument]] = (),
) -> Any:
    """An ``OperatorLineage``: the written objects as outputs, the execution as a run facet."""
    from airflow.providers.common.compat.openlineage.facet import (
        ExternalQueryRunFacet,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    outputs = []
    for target, downloaded in written:
        namespace, name = lineage_dataset(target)
        statistics = OutputStatisticsOutputDatasetFacet(size=downloaded.size, fileCount=1)
        outputs.append(OutputDataset(namespace, name, outputFacets={"outputStatistics": statistics}))
    run_facets: dict[str, Any] = {}
    if execution_id:
        run_facets[EXECUTION_FACET] = ExternalQueryRunFacet(externalQueryId=execution_id, source=base_url)
    return OperatorLineage(outputs=outputs, run_facets=run_facets)
