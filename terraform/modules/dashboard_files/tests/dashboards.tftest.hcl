# terraform test: dashboards render with Terraform's own file() and templatefile(), and the
# repository's real dashboards are dashboard documents before any apply.

run "templates_are_rendered_with_project_and_environment" {
  command = plan

  variables {
    directory     = "testdata"
    template_vars = { project_id = "challenge-latam-dev", env = "dev" }
    required_keys = ["displayName"]
  }

  assert {
    condition     = toset(keys(output.dashboards)) == toset(["plain.json", "slo.json"])
    error_message = "one dashboard per file, templates named without .tftpl"
  }

  assert {
    condition     = strcontains(jsondecode(output.dashboards["slo.json"]).mosaicLayout.tiles[0].widget.scorecard.timeSeriesQuery.timeSeriesFilter.filter, "projects/challenge-latam-dev/services/challenge-latam-api-dev/serviceLevelObjectives/availability")
    error_message = "the SLO names carry the project and the environment"
  }
}

run "a_file_that_is_not_json_is_refused" {
  command = plan

  variables {
    directory     = "testdata/broken"
    required_keys = ["displayName"]
  }

  expect_failures = [output.dashboards]
}

run "the_cloud_monitoring_dashboards_of_this_repository_render" {
  command = plan

  variables {
    directory     = "../../../dashboards/cloud-monitoring"
    template_vars = { project_id = "challenge-latam-prod", env = "prod" }
    required_keys = ["displayName"]
  }

  assert {
    condition     = length(output.dashboards) >= 1
    error_message = "dashboards/cloud-monitoring holds no dashboard"
  }

  assert {
    condition     = alltrue([for f, d in output.dashboards : !strcontains(d, "$${project_id}") && !strcontains(d, "$${env}")])
    error_message = "a template variable was left unrendered"
  }
}

run "the_datadog_dashboards_of_this_repository_are_dashboards" {
  command = plan

  variables {
    directory     = "../../../dashboards/datadog"
    required_keys = ["title", "layout_type", "widgets"]
  }

  assert {
    condition     = length(output.dashboards) >= 1
    error_message = "dashboards/datadog holds no dashboard"
  }
}
