# terraform test: the provider condition admits exactly the repository and subjects intended.

run "prod_admits_only_its_two_environments" {
  command = plan

  variables {
    github_repository    = "acme/challenge-latam-api"
    allowed_environments = ["prod", "prod-readonly"]
  }

  assert {
    condition     = output.attribute_condition == "assertion.repository == 'acme/challenge-latam-api' && (assertion.sub == 'repo:acme/challenge-latam-api:environment:prod' || assertion.sub == 'repo:acme/challenge-latam-api:environment:prod-readonly')"
    error_message = "prod's condition must name the repository and exactly the prod and prod-readonly subjects"
  }
}

run "the_build_identity_admits_only_develop_and_main" {
  command = plan

  variables {
    github_repository = "acme/challenge-latam-api"
    allowed_refs      = ["refs/heads/develop", "refs/heads/main"]
  }

  assert {
    condition     = output.subjects == ["repo:acme/challenge-latam-api:ref:refs/heads/develop", "repo:acme/challenge-latam-api:ref:refs/heads/main"]
    error_message = "the build identity admits pushes from develop and main only"
  }

  assert {
    condition     = !strcontains(output.attribute_condition, "environment")
    error_message = "no environment subject for the build identity"
  }
}

run "without_restrictions_the_repository_is_still_required" {
  command = plan

  variables {
    github_repository = "acme/challenge-latam-api"
  }

  assert {
    condition     = output.attribute_condition == "assertion.repository == 'acme/challenge-latam-api'"
    error_message = "the repository is always part of the condition"
  }
}

run "a_bare_repository_name_is_refused" {
  command = plan

  variables {
    github_repository = "challenge-latam-api"
  }

  expect_failures = [var.github_repository]
}
