# terraform test: the naming convention of CONTRACT.md, checked without any provider.

run "dev_names_follow_the_contract" {
  command = plan

  variables {
    env = "dev"
  }

  assert {
    condition     = output.names.service == "challenge-latam-api-dev"
    error_message = "the Cloud Run service must be challenge-latam-api-dev (docs/ci-cd.md, check-rollout.sh)"
  }

  assert {
    condition     = output.names.test_api_key_secret == "challenge-latam-test-api-key-dev"
    error_message = "the post-deploy test key secret must be challenge-latam-test-api-key-dev (docs/ci-cd.md)"
  }

  assert {
    condition     = alltrue([for n in values(output.names) : can(regex("^challenge-latam-[a-z0-9-]+-dev$", n))])
    error_message = "every hyphenated name must be challenge-latam-<resource>-dev"
  }

  assert {
    condition     = alltrue([for n in values(output.bigquery) : can(regex("^challenge_latam_[a-z0-9_]+_dev$", n))])
    error_message = "every BigQuery id must be challenge_latam_<resource>_dev, without hyphens"
  }
}

run "prod_service_accounts_fit_the_30_character_limit" {
  command = plan

  variables {
    env = "prod"
  }

  assert {
    condition     = alltrue([for n in values(output.service_accounts) : length(n) >= 6 && length(n) <= 30 && can(regex("^[a-z][a-z0-9-]*[a-z0-9]$", n))])
    error_message = "service account ids must be 6 to 30 characters of [a-z0-9-]"
  }

  assert {
    condition     = length(distinct(values(output.names))) == length(output.names)
    error_message = "two resources share a name"
  }

  assert {
    condition     = output.labels.environment == "prod"
    error_message = "labels must name the environment"
  }
}

run "an_unknown_environment_is_refused" {
  command = plan

  variables {
    env = "staging"
  }

  expect_failures = [var.env]
}
