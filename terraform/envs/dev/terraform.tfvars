# Values of dev that are not secrets. The deploy workflow adds only -var image=...
project_id       = "challenge-latam-dev"
region           = "us-central1"
runbook_base_url = "https://github.com/challenge-latam/challenge-latam-api/blob/develop"
