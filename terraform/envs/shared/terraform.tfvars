# Values of the shared project that are not secrets.
project_id           = "challenge-latam-shared"
region               = "us-central1"
github_repository    = "challenge-latam/challenge-latam-api"
environment_projects = ["challenge-latam-dev", "challenge-latam-prod"]
