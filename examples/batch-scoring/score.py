"""Score this task's images (``$CORRAL_ARRAY_ITEMS_FILE``: its share of the folder) with a classifier trained
here on the rest of the digits, and write one line a file to ``$CORRAL_OUTPUT_SCORES/scores.csv``."""

import json
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

digits = load_digits()
model = LogisticRegression(max_iter=2000).fit(digits.data[:1000], digits.target[:1000])
with open(os.environ["CORRAL_ARRAY_ITEMS_FILE"]) as listed:
    files = json.load(listed)
index = os.environ["CORRAL_ARRAY_INDEX"]
with open(os.path.join(os.environ["CORRAL_OUTPUT_SCORES"], "scores.csv"), "w") as out:
    for path in files:
        image = np.load(path).reshape(1, -1)
        out.write(f"{os.path.basename(path)},{int(model.predict(image)[0])}\n")
print(f"task {index}: scored {len(files)} images")
