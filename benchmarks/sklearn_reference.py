"""scikit-learn's L2 logistic regression on our split: the reference for `accuracy_ceiling`.

scikit-learn is optional (the `bench` extra): without it, `sklearn_grid` returns why.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.common import Context
from softmaxreg.data import DataSplits


def sklearn_grid(context: Context, data: DataSplits) -> pd.DataFrame | str:
    """Validation and test accuracy of LogisticRegression per C, or why it cannot run here."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return "not measured: scikit-learn is not installed (pip install -e '.[bench]')"
    x = {
        name: getattr(data, f"{name}_x").flatten(1).cpu().numpy()
        for name in ("train", "val", "test")
    }
    y = {name: getattr(data, f"{name}_y").cpu().numpy() for name in ("train", "val", "test")}
    # Ascending C with warm starts: each fit starts from the more regularised optimum before it,
    # the same solutions (within lbfgs's tolerance) for a fraction of the iterations.
    model = LogisticRegression(max_iter=context.settings.sklearn_max_iter, warm_start=True)
    rows = []
    for c in sorted(context.settings.sklearn_cs):
        context.progress.line(f"  accuracy_ceiling: scikit-learn, C = {c:g}")
        model.set_params(C=c).fit(x["train"], y["train"])
        rows.append(
            {
                "C": c,
                "iterations": int(model.n_iter_.max()),
                "val_accuracy": float(model.score(x["val"], y["val"])),
                "test_accuracy": float(model.score(x["test"], y["test"])),
            }
        )
    return pd.DataFrame(rows)
