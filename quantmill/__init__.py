"""quantmill core: model adapters, formats, calibration statistics, quantizers, evaluators,
exporters and the benchmark harness. Nothing here imports Prefect."""

__version__ = "0.1.0"
