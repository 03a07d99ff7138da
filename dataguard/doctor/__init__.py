"""`dataguard doctor`: the environment (versions, devices, nnU-Net env vars, memory) and the
resource model (peak RSS of preprocessing, training workers and prediction export)."""
