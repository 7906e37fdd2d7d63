"""Write scikit-learn's digits as a dataset folder (data/digits.npz), to copy to the volume with `corral volume cp`."""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

X, y = load_digits(return_X_y=True)
Path("data").mkdir(exist_ok=True)
np.savez_compressed("data/digits.npz", X=X, y=y)
print(f"data/digits.npz: {len(X)} images")
