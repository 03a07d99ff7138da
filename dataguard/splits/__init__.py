"""Cross-validation splits: fold arithmetic, nnU-Net's default split, stratified rebalance
(folds), and what a dataset's scan says about them (context)."""
