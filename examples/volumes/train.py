"""Train on the dataset the job's input is (staged from the volume), write the model to the job's output (uploaded
to the volume when the job ends).

Reads Corral's environment: CORRAL_INPUT_DIGITS (a folder with digits.npz), CORRAL_OUTPUT_MODEL.
"""

import json
import os
import pickle

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

data = np.load(os.path.join(os.environ["CORRAL_INPUT_DIGITS"], "digits.npz"))
X_train, X_test, y_train, y_test = train_test_split(data["X"], data["y"], test_size=0.25, random_state=0)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
accuracy = float(model.score(X_test, y_test))
print(f"{len(X_train)} training images from {os.environ['CORRAL_INPUT_DIGITS']}: test accuracy {accuracy:.3f}")
out = os.environ["CORRAL_OUTPUT_MODEL"]
with open(os.path.join(out, "model.pkl"), "wb") as f:
    pickle.dump(model, f)
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"accuracy": accuracy}, f)
