"""A linear classifier of scikit-learn's digits, trained by SGD one epoch at a time; reports its validation
accuracy each epoch (``corral.runtime.report``), which the sweep maximises and its pruner watches.

    python3 train_sgd.py --alpha 1e-4 --eta0 0.01 [--epochs 20]
"""

import argparse
import os
import pickle

from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from corral import runtime

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float, required=True)
parser.add_argument("--eta0", type=float, required=True)
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()

X, y = load_digits(return_X_y=True)
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
scaler = StandardScaler().fit(X_train)
X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
model = SGDClassifier(loss="log_loss", alpha=args.alpha, learning_rate="constant", eta0=args.eta0, random_state=0)
for epoch in range(args.epochs):
    model.partial_fit(X_train, y_train, classes=list(range(10)))
    accuracy = float(model.score(X_val, y_val))
    runtime.report(step=epoch, val_acc=accuracy)
    print(f"epoch {epoch}: val_acc {accuracy:.4f}", flush=True)
    if runtime.preemption_requested():  # pruned by the sweep (or terminated): stop at once
        runtime.exit_preempted()

with open(os.path.join(os.environ.get("CORRAL_OUTPUT_MODEL", "."), "model.pkl"), "wb") as f:
    pickle.dump((scaler, model), f)
print(f"alpha={args.alpha} eta0={args.eta0}: val_acc {accuracy:.4f}")
