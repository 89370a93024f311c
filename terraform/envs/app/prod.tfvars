# prod: the values that differ from dev. Not secret. The deploy workflow adds only -var image=...
#   terraform plan -var-file=prod.tfvars -var image=<registry>/challenge-latam-api@sha256:<digest>
env              = "prod"
project_id       = "challenge-latam-prod"
region           = "us-central1"
runbook_base_url = "https://github.com/challenge-latam/challenge-latam-api/blob/main"

# prod keeps one warm instance so a cold start never lands on the ingest latency SLO; the ceiling
# caps cost and protects Pub/Sub and BigQuery quotas.
min_instances = 1
max_instances = 20

partition_expiration_days = 400
