"""Write 60 of scikit-learn's digits as small image files (8 by 8 grey levels, one per file) into ./images/, to be
scored by the array in job.yaml."""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

digits = load_digits()
folder = Path(__file__).resolve().parent / "images"
folder.mkdir(exist_ok=True)
for i in range(60):
    np.save(folder / f"digit-{i:03d}.npy", digits.images[1000 + i])
print(f"wrote 60 images to {folder}")
