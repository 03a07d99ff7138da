"""Dataset handles: what `Workspace.dataset(name)` returns, and the feature objects it hands out.

`ws.dataset("Dataset001_Heart")` is a `dataset.DatasetHandle`; its `.splits`, `.repair`,
`.train`, `.evaluate` and `.submit` (`splits.Splits`, `repair.Repairs`, `train.Training`,
`evaluate.Evaluation`, `submit.Submission`) own the methods that once took `dataset=` on the
Workspace (the sqlite-utils `db.table(name)` pattern). `ws.repair`, `ws.train`, `ws.evaluate`
and `ws.submit` are the same objects for the whole workspace: a method that needs a dataset
there takes the only one.

This package sits in the workspace layer: it imports features, engine and vocabulary, never a
face and never `dataguard.workspace` (a handle gets its Workspace as an argument).
"""
