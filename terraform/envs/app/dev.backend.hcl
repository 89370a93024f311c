# Partial GCS backend configuration of dev (terraform init -backend-config=dev.backend.hcl).
# The bucket is the environment's TF_STATE_BUCKET, given at init with -backend-config=bucket=...,
# never written here. The prefix is the one the former per-environment root of dev used, so the
# state stays where it was.
prefix = "challenge-latam-api/dev"
