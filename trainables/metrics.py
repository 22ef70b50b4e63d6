"""The metrics a sweep may optimise, by the names trials report them under (Ray, MLflow, report)."""

#: the test error of each epoch, and of the last one (a sweep's default metric)
TEST_ERR, FINAL_ERR = "test/top1_err", "final/top1_err"

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

#: a metric known only when a trial ends -> the metric reported every epoch that it is the last value of
#: (`final/top1_err` IS the last epoch's `test/top1_err`)
PER_EPOCH = {"final/top1_err": "test/top1_err", "final/top5_err": "test/top5_err"}
#: the metrics reported every epoch (what ASHA and search algorithms can read while a trial runs)
EPOCH_METRICS = ("train/loss", "test/loss", "test/top1_err", "test/top5_err", "best/top1_err")
#: what a trial reports when it ends besides its last epoch's metrics (trainables/loop.py builds them)
FINAL_METRICS = ("final/top1_err", "final/top5_err", "best/top1_err", "robust/fgsm_top1_err",
                 "robust/noise_top1_err", "cost/device_s")


def epoch_curve(metric: str) -> str | None:
    """The per-epoch metric whose curve shows how `metric` came about; None when it has none (robust/)."""
    name = PER_EPOCH.get(metric, metric)
    return name if name in EPOCH_METRICS else None
