# dev: the values that differ from prod. Not secret. The deploy workflow adds only -var image=...
#   terraform plan -var-file=dev.tfvars -var image=<registry>/challenge-latam-api@sha256:<digest>
env              = "dev"
project_id       = "challenge-latam-dev"
region           = "us-central1"
runbook_base_url = "https://github.com/challenge-latam/challenge-latam-api/blob/develop"

# dev scales to zero: nobody pays for idle instances; the first request after idle takes a cold start.
min_instances = 0
max_instances = 3

partition_expiration_days = 30
