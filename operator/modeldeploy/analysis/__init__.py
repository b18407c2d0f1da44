"""Analysis: is the canary healthy? Pure; the providers (adapters) do the measuring.

For now this package holds the report types the engine consumes
(:mod:`modeldeploy.analysis.report`); issue 5 adds the evaluation.
"""

from modeldeploy.analysis.report import AnalysisFailure, AnalysisReport, AnalysisRequest, Breach

__all__ = ["AnalysisFailure", "AnalysisReport", "AnalysisRequest", "Breach"]
