"""The metrics a sweep may optimise, by the names trials report them under (Ray, MLflow, report)."""

#: every metric a sweep may optimise (`metric:` of a spec), with the worst value it can take: what a
#: diverged trial reports for each, so that schedulers and searchers reading any of them never fail
WORST = {
    "train/loss": 1e9,
    "test/loss": 1e9,
    "test/top1_err": 100.0,
    "test/top5_err": 100.0,
    "final/top1_err": 100.0,
    "final/top5_err": 100.0,
    "best/top1_err": 100.0,
    "robust/fgsm_top1_err": 100.0,
    "robust/noise_top1_err": 100.0,
}
