"""Fit a logistic regression on scikit-learn's digits; node N takes the N-th regularisation strength.

Reads Corral's environment: CORRAL_NODE_RANK, CORRAL_NUM_NODES, CORRAL_OUTPUT_MODEL; reports its accuracy as a
metric (``corral job metrics NAME``).
"""

import argparse
import json
import os
import pickle
import time

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from corral import runtime

parser = argparse.ArgumentParser()
parser.add_argument("--c-values", default="0.1,1.0")
args = parser.parse_args()

rank = int(os.environ.get("CORRAL_NODE_RANK", "0"))
nodes = int(os.environ.get("CORRAL_NUM_NODES", "1"))
c_values = [float(c) for c in args.c_values.split(",")]
c = c_values[rank % len(c_values)]
out = os.environ.get("CORRAL_OUTPUT_MODEL", ".")

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
print(f"node {rank}/{nodes}: {len(X_train)} training images, C={c}")
started = time.perf_counter()
model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
model.fit(X_train, y_train)
accuracy = float(model.score(X_test, y_test))
print(f"node {rank}: test accuracy {accuracy:.4f} in {time.perf_counter() - started:.2f}s")
runtime.report(val_acc=accuracy, c=c)  # each node its own series (its rank's)

with open(os.path.join(out, f"model-node{rank}.pkl"), "wb") as f:
    pickle.dump(model, f)
with open(os.path.join(out, f"metrics-node{rank}.json"), "w") as f:
    json.dump({"node": rank, "C": c, "accuracy": accuracy}, f)
print(f"node {rank}: wrote model-node{rank}.pkl to {out}")
