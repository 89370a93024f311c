# Cloud Run v2: the API container beside two sidecars, its runtime identity with exactly the
# grants the code uses, and who may invoke it. The whole service lives here (not in
# `gcloud run deploy`), so a deploy is `terraform apply -var image=...@sha256:...`
# (docs/ci-cd.md) and the state always says which digest runs.
#
# Containers of each instance:
#   app            the service; PORT 8080 is the only ingress port; ADMIN_PORT 9464 (/metrics)
#                  listens on the instance's loopback interface only, never routed by Cloud Run.
#   datadog-agent  serverless-init as a sidecar: OTLP gRPC receiver on localhost:4317 for the
#                  app's traces and metrics (OTEL_EXPORTER_OTLP_ENDPOINT), log tailing from the
#                  shared in-memory volume, DD_API_KEY from Secret Manager. How the OTLP metrics
#                  are named in Datadog: dashboards/datadog/README.md.
#   gmp-collector  Google's Managed Service for Prometheus sidecar: scrapes localhost:9464
#                  and writes prometheus.googleapis.com/<name>/<kind> series, which the Cloud
#                  Monitoring SLOs and dashboards query. Google recommends it for services that
#                  expose Prometheus metrics on Cloud Run; the alternative (an OpenTelemetry
#                  collector with a Prometheus receiver) would be one more config to own.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

locals {
  # Each sidecar's limits. Cloud Run ("Configure CPU limits for services") allows less than 1 vCPU
  # only with maximum concurrency 1 and request-based billing; this service takes 80 concurrent
  # requests with CPU always allocated, so every container gets whole vCPUs. The instance is
  # app + 2 sidecars = 3 vCPU and 1.5 GiB (terraform/README.md, "What it costs").
  sidecar_cpu    = "1"
  sidecar_memory = "512Mi"

  api_keys_dir  = "/secrets/api-keys"
  api_keys_file = "${local.api_keys_dir}/keys.json"
  logs_dir      = "/shared-logs"

  # The GMP sidecar reads a RunMonitoring document from /etc/rungmp/config.yaml. Its default
  # would scrape port 8080, the public port; our metrics live on ADMIN_PORT.
  gmp_config = yamlencode({
    apiVersion = "monitoring.googleapis.com/v1beta"
    kind       = "RunMonitoring"
    metadata   = { name = var.service_name }
    spec = {
      endpoints = [{
        port     = var.admin_port
        path     = "/metrics"
        interval = var.scrape_interval
      }]
    }
  })

  # The contract's settings (CONTRACT.md, Settings). PUBSUB_SUBSCRIPTION stays unset on
  # purpose: the native BigQuery subscription writes the rows (terraform/README.md explains the
  # pull worker alternative).
  app_env = {
    BACKEND                     = "gcp"
    ADMIN_PORT                  = tostring(var.admin_port)
    GCP_PROJECT                 = var.project_id
    PUBSUB_TOPIC                = var.topic_name
    BQ_DATASET                  = var.dataset_id
    BQ_TABLE                    = var.table_id
    API_KEYS_FILE               = local.api_keys_file
    RATE_LIMIT_PER_SECOND       = tostring(var.rate_limit_per_second)
    RATE_LIMIT_BURST            = tostring(var.rate_limit_burst)
    OTEL_EXPORTER_OTLP_ENDPOINT = "http://localhost:4317"
    OTEL_SERVICE_NAME           = var.service_label
    # Resource attributes of the OTLP traces and metrics: the agent maps
    # deployment.environment.name to the `env` tag (service.name -> service and service.version
    # -> version come from the app itself). The Datadog dashboards and SLOs select on both.
    OTEL_RESOURCE_ATTRIBUTES = "deployment.environment.name=${var.env}"
    LOG_FORMAT               = "json"
    # The same JSON lines as stdout (Cloud Logging), into the volume the Datadog sidecar tails
    # (DD_SERVERLESS_LOG_PATH below): without it Datadog would get traces but no logs. The app
    # rotates the file at 16 MiB and keeps one old file, so it stays under 32 of the 64 MiB.
    LOG_FILE = "${local.logs_dir}/logs/app.log"
    # Unified service tagging: the Datadog tracer and log pipeline read these too.
    DD_SERVICE             = var.service_label
    DD_ENV                 = var.env
    DD_VERSION             = var.app_version
    DD_SERVERLESS_LOG_PATH = "${local.logs_dir}/logs/*.log"
  }

  # Bearer JWTs beside API keys (docs/oidc.md); none when no issuer is configured.
  oidc_env = { for k, v in {
    OIDC_ISSUERS     = join(",", var.oidc_issuers)
    OIDC_AUDIENCE    = var.oidc_audience
    OIDC_SCOPE_CLAIM = var.oidc_scope_claim
    OIDC_SCOPE_MAP   = var.oidc_scope_map
  } : k => v if length(var.oidc_issuers) > 0 }

  datadog_env = {
    DD_SERVICE             = var.service_label
    DD_ENV                 = var.env
    DD_VERSION             = var.app_version
    DD_SITE                = var.datadog_site
    DD_HEALTH_PORT         = "5555"
    DD_SERVERLESS_LOG_PATH = "${local.logs_dir}/logs/*.log"
    DD_LOGS_ENABLED        = "true"
    # OTLP receiver for the app's traces and metrics; loopback only, shared by the containers of
    # the instance.
    DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_GRPC_ENDPOINT = "localhost:4317"
    DD_OTLP_CONFIG_METRICS_ENABLED                  = "true"
    # Explicit-bucket histograms as per-bucket counts `<name>.bucket{lower_bound,upper_bound}`
    # plus `<name>.count` / `.sum` (`.min` / `.max`): the latency SLOs count good events as the
    # buckets at or under their threshold (a bucket boundary) over `.count`. The default,
    # `distributions`, would give percentiles but no exact count under a threshold.
    DD_OTLP_CONFIG_METRICS_HISTOGRAMS_MODE                     = "counters"
    DD_OTLP_CONFIG_METRICS_HISTOGRAMS_SEND_AGGREGATION_METRICS = "true"
  }
}

# --- Runtime identity ---------------------------------------------------------------------------

resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = var.runtime_account_id
  display_name = "challenge-latam-api runtime (${var.env})"
  description  = "Identity of the Cloud Run service: publishes to the records topic, reads the records dataset."
}

resource "google_pubsub_topic_iam_member" "runtime_publishes" {
  project = var.project_id
  topic   = var.topic_name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.runtime.member
}

resource "google_bigquery_dataset_iam_member" "runtime_reads" {
  project    = var.project_id
  dataset_id = var.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.runtime.member
}

# Unavoidably project-level: BigQuery runs query jobs in a project, and no narrower resource
# holds bigquery.jobs.create. The data itself stays readable through the dataset grant only.
# Listed in tests/terraform (PROJECT_LEVEL_EXCEPTIONS).
resource "google_project_iam_member" "runtime_runs_queries" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.runtime.member
}

# Unavoidably project-level: metric writes go to the project's Cloud Monitoring; the GMP
# sidecar writes the app's Prometheus series as the runtime identity.
resource "google_project_iam_member" "runtime_writes_metrics" {
  count = var.enable_gmp_sidecar ? 1 : 0

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.runtime.member
}

resource "google_secret_manager_secret_iam_member" "runtime_reads_secret" {
  for_each = merge(
    { api_keys = var.api_keys_secret_id, datadog_api_key = var.datadog_api_key_secret_id },
    var.enable_gmp_sidecar ? { gmp_config = google_secret_manager_secret.gmp_config[0].secret_id } : {},
  )

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}

# The deployer attaches the runtime identity to new revisions: serviceAccountUser on this one
# account, not on the project.
resource "google_service_account_iam_member" "deployer_acts_as_runtime" {
  for_each = toset(var.deployer_members)

  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# --- GMP scrape configuration -------------------------------------------------------------------
# Cloud Run mounts files only from Secret Manager, so the (non-secret) RunMonitoring document is
# a secret version. It is the one secret version Terraform writes; tests/terraform checks that
# no other exists.

resource "google_secret_manager_secret" "gmp_config" {
  count = var.enable_gmp_sidecar ? 1 : 0

  project   = var.project_id
  secret_id = var.gmp_config_secret_id
  labels    = var.labels

  annotations = {
    purpose = "RunMonitoring scrape configuration of the GMP sidecar (not secret)"
  }

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "gmp_config" {
  count = var.enable_gmp_sidecar ? 1 : 0

  secret      = google_secret_manager_secret.gmp_config[0].id
  secret_data = local.gmp_config
}

# The read-only plan identity refreshes this version's data during plans.
resource "google_secret_manager_secret_iam_member" "config_reader" {
  for_each = var.enable_gmp_sidecar ? toset(var.config_readers) : toset([])

  project   = var.project_id
  secret_id = google_secret_manager_secret.gmp_config[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# --- The service --------------------------------------------------------------------------------

resource "google_cloud_run_v2_service" "api" {
  project             = var.project_id
  name                = var.service_name
  location            = var.region
  description         = "challenge-latam-api (${var.env}): ingestData -> Pub/Sub -> BigQuery, getData <- BigQuery."
  labels              = var.labels
  ingress             = var.ingress
  deletion_protection = var.deletion_protection

  # No IAM-free access: invocations need roles/run.invoker (see google_cloud_run_v2_service_iam_member
  # below); clients then authenticate to the app with their API key.
  invoker_iam_disabled = false
  # A Google ID token minted for the app's OIDC audience also passes Cloud Run IAM, so a
  # service-to-service caller sends one token (docs/oidc.md).
  custom_audiences = var.oidc_audience == "" ? null : [var.oidc_audience]

  template {
    service_account = google_service_account.runtime.email
    labels          = var.labels

    # Requests are short (the ingest SLO is 250 ms); 30 s bounds a stuck dependency well past
    # the app's own deadlines so the app answers 504 itself.
    timeout = "30s"

    # Concurrency: the app is async Rust; one vCPU serves hundreds of in-flight requests that
    # mostly wait on Pub/Sub or BigQuery. 80 keeps the per-instance rate limiter and load
    # shedding meaningful and lets Cloud Run add instances on concurrency before CPU saturates.
    max_instance_request_concurrency = var.concurrency

    scaling {
      # prod keeps one warm instance: a cold start (image pull, three containers, keys file)
      # would otherwise land on the ingest latency SLO after every idle period. dev scales to zero.
      min_instance_count = var.min_instances
      # The ceiling caps cost and protects Pub/Sub quotas and BigQuery slots under a flood;
      # the edge module's Cloud Armor limit is the global complement of the per-instance limit.
      max_instance_count = var.max_instances
    }

    volumes {
      name = "api-keys"
      secret {
        secret = var.api_keys_secret_id
        items {
          version = "latest"
          path    = "keys.json"
        }
      }
    }

    volumes {
      name = "shared-logs"
      empty_dir {
        medium     = "MEMORY"
        size_limit = "64Mi"
      }
    }

    dynamic "volumes" {
      for_each = var.enable_gmp_sidecar ? [1] : []
      content {
        name = "gmp-config"
        secret {
          secret = google_secret_manager_secret.gmp_config[0].secret_id
          items {
            version = "latest"
            path    = "config.yaml"
          }
        }
      }
    }

    containers {
      name  = "app"
      image = var.image
      # The app starts after the agent so the OTLP exporter finds its endpoint.
      depends_on = ["datadog-agent"]

      ports {
        name           = "http1"
        container_port = 8080
      }

      dynamic "env" {
        for_each = merge(local.app_env, local.oidc_env)
        content {
          name  = env.key
          value = env.value
        }
      }

      resources {
        limits = {
          cpu    = var.app_cpu
          memory = var.app_memory
        }
        # CPU stays allocated outside requests: the OTLP exporter and the metrics scrape run in
        # the background, and the GMP sidecar needs it to scrape reliably (Google's guidance).
        cpu_idle          = !var.cpu_always_allocated
        startup_cpu_boost = true
      }

      volume_mounts {
        name       = "api-keys"
        mount_path = local.api_keys_dir
      }

      volume_mounts {
        name       = "shared-logs"
        mount_path = local.logs_dir
      }

      # Ready only when broker and store answer (CONTRACT.md: /readyz). The timeout stays below
      # the period: the provider's reference says timeout_seconds "must be smaller than
      # periodSeconds" (the API's "period >= timeout" allows equal; smaller satisfies both).
      # 20 probes x 3 s keep the 60 s the instance had to become ready.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 3
        timeout_seconds       = 2
        failure_threshold     = 20
        http_get {
          path = "/readyz"
          port = 8080
        }
      }

      # Restart only when the process itself cannot serve: /healthz does not touch
      # dependencies, so a Pub/Sub outage never turns into a restart storm.
      liveness_probe {
        period_seconds    = 10
        timeout_seconds   = 2
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }

    containers {
      name  = "datadog-agent"
      image = var.datadog_image

      dynamic "env" {
        for_each = local.datadog_env
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "DD_API_KEY"
        value_source {
          secret_key_ref {
            secret  = var.datadog_api_key_secret_id
            version = "latest"
          }
        }
      }

      # A whole vCPU, as Datadog's own Cloud Run module gives this sidecar (cpu "1", 512Mi):
      # Cloud Run allows less than 1 vCPU only with maximum concurrency 1 and request-based
      # billing, and this service runs 80 concurrent requests with CPU always allocated.
      resources {
        limits = {
          cpu    = local.sidecar_cpu
          memory = local.sidecar_memory
        }
      }

      volume_mounts {
        name       = "shared-logs"
        mount_path = local.logs_dir
      }

      # A TCP connect on the health port: 1 s is plenty and stays below the 2 s period
      # (15 x 2 s = 30 s, as before).
      startup_probe {
        period_seconds    = 2
        timeout_seconds   = 1
        failure_threshold = 15
        tcp_socket {
          port = 5555
        }
      }
    }

    dynamic "containers" {
      for_each = var.enable_gmp_sidecar ? [1] : []
      content {
        name       = "gmp-collector"
        image      = var.gmp_image
        depends_on = ["app"]

        # A whole vCPU for the same reason as the Datadog sidecar's.
        resources {
          limits = {
            cpu    = local.sidecar_cpu
            memory = local.sidecar_memory
          }
        }

        volume_mounts {
          name       = "gmp-config"
          mount_path = "/etc/rungmp"
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  depends_on = [
    google_secret_manager_secret_iam_member.runtime_reads_secret,
    google_secret_manager_secret_version.gmp_config,
  ]
}

# Invokers come from a variable, validated to never hold allUsers or allAuthenticatedUsers.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = toset(var.invokers)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.api.name
  role     = "roles/run.invoker"
  member   = each.value
}
