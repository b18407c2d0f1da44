"""Analysis: is the canary healthy? Pure; the providers (adapters) do the measuring.

- :mod:`~modeldeploy.analysis.presets`: the built-in metrics and per-service bundles,
  merged with the resource's own metrics and rollback indicators;
- :mod:`~modeldeploy.analysis.promql`: placeholders in queries, checked and filled safely;
- :mod:`~modeldeploy.analysis.evaluate`: one round's measurements -> pass, fail or
  inconclusive per metric, with the consecutive counts;
- :mod:`~modeldeploy.analysis.report`: the report types the engine consumes.
"""

from modeldeploy.analysis.report import AnalysisFailure, AnalysisReport, AnalysisRequest, Breach

__all__ = ["AnalysisFailure", "AnalysisReport", "AnalysisRequest", "Breach"]
