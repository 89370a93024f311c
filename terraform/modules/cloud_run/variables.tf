variable "project_id" {
  description = "Google Cloud project of the service."
  type        = string
}

variable "region" {
  description = "Cloud Run region, for example us-central1."
  type        = string
}

variable "env" {
  description = "Environment: dev or prod (DD_ENV and labels)."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod."
  }
}

variable "service_name" {
  description = "Cloud Run service name (challenge-latam-api-<env>)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$", var.service_name))
    error_message = "service_name must be a valid Cloud Run name (lowercase, at most 49 characters)."
  }
}

variable "service_label" {
  description = "Service name in telemetry (OTEL_SERVICE_NAME, DD_SERVICE): the contract's challenge-latam-api."
  type        = string
  default     = "challenge-latam-api"
}

variable "image" {
  description = "The API image by digest: <registry>/challenge-latam-api@sha256:<64 hex>. A tag is refused: the state must say which bytes run."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest (...@sha256:<64 hex>)."
  }
}

variable "app_version" {
  description = "Version shown as DD_VERSION (the release tag, or the digest's short form)."
  type        = string
}

variable "datadog_image" {
  description = "Datadog serverless-init sidecar image, pinned to a version (and digest)."
  type        = string
  # Datadog's own Cloud Run Terraform module default (DataDog/terraform-google-cloud-run-datadog).
  default = "gcr.io/datadoghq/serverless-init:1.9.6@sha256:2fd9edb45419afd89beade8c751cf54483ef5efdbbfa58a96a5092f6d8f8ce58"

  validation {
    condition     = can(regex("^gcr\\.io/datadoghq/serverless-init:[0-9]+\\.[0-9]+\\.[0-9]+(@sha256:[0-9a-f]{64})?$", var.datadog_image))
    error_message = "datadog_image must be gcr.io/datadoghq/serverless-init at an exact x.y.z version."
  }
}

variable "datadog_site" {
  description = "Datadog site the agent sends to (datadoghq.com, datadoghq.eu, us5.datadoghq.com, ...)."
  type        = string
  default     = "datadoghq.com"
}

variable "enable_gmp_sidecar" {
  description = "Run the Managed Service for Prometheus sidecar (the Cloud Monitoring SLOs on prometheus.googleapis.com metrics need it)."
  type        = bool
  default     = true
}

variable "gmp_image" {
  description = "Managed Service for Prometheus sidecar image, pinned to a version."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"

  validation {
    condition     = can(regex("^us-docker\\.pkg\\.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:[0-9]+\\.[0-9]+\\.[0-9]+(@sha256:[0-9a-f]{64})?$", var.gmp_image))
    error_message = "gmp_image must be the cloud-run-gmp-sidecar at an exact x.y.z version."
  }
}

variable "gmp_config_secret_id" {
  description = "Secret that holds the GMP sidecar's RunMonitoring document."
  type        = string
}

variable "scrape_interval" {
  description = "How often the GMP sidecar scrapes /metrics."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.scrape_interval))
    error_message = "scrape_interval must be in seconds, such as 30s."
  }
}

variable "admin_port" {
  description = "ADMIN_PORT: Prometheus /metrics, reachable on the instance's loopback only."
  type        = number
  default     = 9464

  validation {
    condition     = var.admin_port != 8080 && var.admin_port > 1024 && var.admin_port < 65536
    error_message = "admin_port must differ from the public port 8080."
  }
}

variable "topic_name" {
  description = "Records topic short name (PUBSUB_TOPIC); the runtime identity may publish here only."
  type        = string
}

variable "dataset_id" {
  description = "Records dataset (BQ_DATASET); the runtime identity reads this dataset only."
  type        = string
}

variable "table_id" {
  description = "Records table (BQ_TABLE)."
  type        = string
}

variable "api_keys_secret_id" {
  description = "Secret whose latest version is the keys file (JSON list of {id, sha256, scopes}), mounted where API_KEYS_FILE points."
  type        = string
}

variable "datadog_api_key_secret_id" {
  description = "Secret whose latest version is the Datadog API key (DD_API_KEY of the sidecar)."
  type        = string
}

variable "rate_limit_per_second" {
  description = "RATE_LIMIT_PER_SECOND: per-client sustained rate on each instance."
  type        = number
  default     = 50

  validation {
    condition     = var.rate_limit_per_second > 0
    error_message = "rate_limit_per_second must be positive."
  }
}

variable "rate_limit_burst" {
  description = "RATE_LIMIT_BURST: per-client burst on each instance."
  type        = number
  default     = 100

  validation {
    condition     = var.rate_limit_burst >= 1
    error_message = "rate_limit_burst must be at least 1."
  }
}

variable "min_instances" {
  description = "Instances kept warm (0 lets dev scale to zero; prod keeps 1)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_instances >= 0 && var.min_instances <= 10
    error_message = "min_instances must be from 0 to 10."
  }
}

variable "max_instances" {
  description = "Instance ceiling (cost and downstream quota guard)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 100
    error_message = "max_instances must be from 1 to 100."
  }
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
  default     = 80

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be from 1 to 1000."
  }
}

variable "app_cpu" {
  description = "vCPU limit of the app container (\"1\"): a whole number, since less than 1 vCPU needs concurrency 1 and request-based billing."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.app_cpu)
    error_message = "app_cpu must be 1, 2, 4, 6 or 8 vCPU: Cloud Run allows less than 1 vCPU only with concurrency 1 and request-based billing."
  }
}

variable "app_memory" {
  description = "Memory limit of the app container (\"512Mi\")."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.app_memory))
    error_message = "app_memory must be like 512Mi or 1Gi."
  }
}

variable "cpu_always_allocated" {
  description = "Keep CPU allocated between requests (background export and scrapes); instance-based billing."
  type        = bool
  default     = true
}

variable "ingress" {
  description = "Cloud Run ingress: INGRESS_TRAFFIC_ALL, or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER when the edge module fronts it."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be one of Cloud Run's INGRESS_TRAFFIC_* values."
  }
}

variable "invokers" {
  description = "IAM members granted roles/run.invoker on the service (the read-only CI identity, the uptime check agent, client service accounts). Never allUsers."
  type        = list(string)

  validation {
    condition     = alltrue([for m in var.invokers : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "the service is not public: allUsers and allAuthenticatedUsers may not invoke it."
  }

  validation {
    condition     = alltrue([for m in var.invokers : can(regex("^(serviceAccount|group|user|domain):", m))])
    error_message = "invokers must be IAM members such as serviceAccount:... or group:...."
  }
}

variable "deployer_members" {
  description = "IAM members (the environment's deployer) that may attach the runtime identity to new revisions."
  type        = list(string)
  default     = []
}

variable "runtime_account_id" {
  description = "Account id of the runtime service account."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.runtime_account_id))
    error_message = "runtime_account_id must be 6 to 30 characters of [a-z0-9-]."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the service."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for the service and its revisions."
  type        = map(string)
  default     = {}
}

variable "config_readers" {
  description = "IAM members that may read the GMP configuration secret (the read-only plan identity refreshes it)."
  type        = list(string)
  default     = []
}

variable "oidc_issuers" {
  description = "OIDC_ISSUERS: issuers whose bearer JWTs the app accepts beside API keys (docs/oidc.md); empty turns OIDC off."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for i in var.oidc_issuers : can(regex("^https://[^ ,]*[^/ ,]$", i))])
    error_message = "Each OIDC issuer must be an https:// URL without a trailing slash, exactly as tokens carry it in iss."
  }
}

variable "oidc_audience" {
  description = "OIDC_AUDIENCE: the aud every token must carry; also a Cloud Run custom audience, so one Google ID token passes Cloud Run IAM and the app."
  type        = string
  default     = ""
}

variable "oidc_scope_claim" {
  description = "OIDC_SCOPE_CLAIM: claims (comma-separated) whose values are looked up in oidc_scope_map."
  type        = string
  default     = "groups,email"
}

variable "oidc_scope_map" {
  description = "OIDC_SCOPE_MAP: value=scope+scope,... (scopes ingest, read); a value not listed grants nothing."
  type        = string
  default     = ""
}
