"""IAM in terraform/: every grant on the resource it concerns, additive members only, and an
exact, argued list of project-level grants."""

from __future__ import annotations

from conftest import blocks

# (directory, resource) -> the roles it may grant at project level, and why it cannot be narrower.
PROJECT_LEVEL_EXCEPTIONS = {
    # BigQuery runs query jobs in a project; bigquery.jobs.create exists on no narrower resource.
    ("modules/cloud_run", "runtime_runs_queries"): {"roles/bigquery.jobUser"},
    # Metric writes go to the project's Cloud Monitoring (the GMP sidecar writes as the runtime).
    ("modules/cloud_run", "runtime_writes_metrics"): {"roles/monitoring.metricWriter"},
    # The deploy and plan identities create or read resources of many kinds (bootstrap pins them).
    ("modules/github_wif", "identity"): None,
}

DEPLOYER_ROLES = [
    "roles/bigquery.dataOwner",
    "roles/iam.serviceAccountAdmin",
    "roles/monitoring.editor",
    "roles/pubsub.admin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/serviceusage.serviceUsageConsumer",
]
READONLY_ROLES = ["roles/iam.securityReviewer", "roles/viewer"]


def test_no_authoritative_iam_anywhere(resources):
    authoritative = [r.address for r in resources if r.type.endswith(("_iam_policy", "_iam_binding"))]
    assert authoritative == [], "authoritative IAM would remove grants Terraform does not know about"


def test_project_level_grants_are_exactly_the_listed_exceptions(resources):
    project = [r for r in resources if r.type.startswith("google_project_iam_")]
    assert {(r.directory, r.name) for r in project} == set(PROJECT_LEVEL_EXCEPTIONS)
    for r in project:
        assert r.type == "google_project_iam_member", r.address
        roles = PROJECT_LEVEL_EXCEPTIONS[(r.directory, r.name)]
        if roles is not None:
            assert {r.body["role"]} == roles, r.address
    others = [r.address for r in resources if r.type.startswith(("google_organization_iam", "google_folder_iam"))]
    assert others == []


def test_the_deployer_and_reader_project_roles_are_exactly_pinned(configs):
    boot = configs["bootstrap"]
    text = boot.files["main.tf"]
    deployer = boot.locals["deployer_roles"]
    for role in DEPLOYER_ROLES:
        assert f'"{role}"' in deployer, role
    assert deployer.count("roles/") == len(DEPLOYER_ROLES) + 2  # + the two edge roles, when enabled
    assert "roles/compute.loadBalancerAdmin" in deployer and "var.enable_edge" in deployer
    assert boot.locals["readonly_roles"] == READONLY_ROLES
    assert "roles/owner" not in text and "roles/editor" not in text
    # projectIamAdmin only under a condition that names the two grantable roles.
    wif = boot.modules["wif"]
    assert wif["iam_admin_grantable_roles"] == {"deployer": ["roles/bigquery.jobUser", "roles/monitoring.metricWriter"]}
    grant = next(r for r in configs["modules/github_wif"].resources if r.name == "identity")
    assert "modifiedGrantsByRole" in str(grant.body), "the projectIamAdmin condition is missing"
    assert configs["envs/shared"].modules["wif"]["identities"]["build"]["project_roles"] == []


def test_the_runtime_identity_gets_publisher_on_the_topic_and_viewer_on_the_dataset_only(configs):
    run = configs["modules/cloud_run"]
    runtime = [r for r in run.resources if "google_service_account.runtime.member" in str(r.body.get("member"))]
    grants = sorted((r.type, r.body["role"]) for r in runtime)
    assert grants == [
        ("google_bigquery_dataset_iam_member", "roles/bigquery.dataViewer"),
        ("google_project_iam_member", "roles/bigquery.jobUser"),
        ("google_project_iam_member", "roles/monitoring.metricWriter"),
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),
        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor"),
    ]


def test_the_pubsub_service_agent_is_granted_on_tables_topics_and_subscriptions_only(configs):
    pubsub = configs["modules/pubsub"]
    agent = [r for r in pubsub.resources if r.body.get("member") == "${local.pubsub_agent}"]
    assert sorted((r.type, r.body["role"]) for r in agent) == [
        ("google_bigquery_table_iam_member", "roles/bigquery.dataEditor"),
        ("google_bigquery_table_iam_member", "roles/bigquery.dataEditor"),
        ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber"),
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),
    ]
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in pubsub.locals["pubsub_agent"]


def test_workload_identity_is_limited_to_the_repository_and_each_environment(configs):
    wif = configs["modules/github_wif"]
    provider = next(r for r in wif.resources if r.type == "google_iam_workload_identity_pool_provider")
    assert provider.body["attribute_condition"] == "${module.condition.attribute_condition}"
    assert blocks(provider.body["oidc"])[0]["issuer_uri"] == "https://token.actions.githubusercontent.com"
    # Bootstrap: the provider of an environment admits that environment's two GitHub environments.
    call = configs["bootstrap"].modules["wif"]
    assert call["allowed_environments"] == ["${var.env}", "${var.env}-readonly"]
    assert call["identities"]["deployer"]["principal"] == "environment:${var.env}"
    assert call["identities"]["readonly"]["principal"] == "environment:${var.env}-readonly"
    # The build identity (shared) admits develop and main only.
    assert configs["envs/shared"].modules["wif"]["allowed_refs"] == ["refs/heads/develop", "refs/heads/main"]
    # Bindings are principalSet on one attribute, never the whole pool.
    text = wif.files["main.tf"]
    assert "attribute.environment/" in text and "/*" not in text.split("principalSet://")[1].split("\n")[0]


def test_no_service_account_keys(resources):
    assert [r.address for r in resources if r.type == "google_service_account_key"] == []
