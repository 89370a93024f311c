# Values of prod that are not secrets. The deploy workflow adds only -var image=...
project_id       = "challenge-latam-prod"
region           = "us-central1"
runbook_base_url = "https://github.com/challenge-latam/challenge-latam-api/blob/main"
