//! End-to-end tests live in `tests/`: they load the real model
//! (`models/smollm2-135m`, built by `scripts/setup.sh`) and fail with that
//! hint when it is missing.
