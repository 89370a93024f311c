# Optional edge (off by default: envs set enable_edge): a global external HTTPS load balancer in
# front of Cloud Run with a Cloud Armor policy that rate-limits per client IP. The app limits per
# API key on each instance (RATE_LIMIT_*); N instances admit N times that. Cloud Armor is the
# global complement: one budget per client across all instances, enforced before a request costs
# an instance. With the edge on, set the service's ingress to INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER
# so nothing bypasses it. Cloud Run's invoker check still applies behind the load balancer.

terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.14, < 8.0"
    }
  }
}

resource "google_compute_region_network_endpoint_group" "run" {
  project               = var.project_id
  name                  = "${var.name}-neg"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = var.cloud_run_service
  }
}

resource "google_compute_security_policy" "edge" {
  project     = var.project_id
  name        = "${var.name}-armor"
  description = "Per-IP rate limit in front of ${var.cloud_run_service}."

  rule {
    action      = "throttle"
    priority    = 1000
    description = "At most ${var.requests_per_minute_per_ip} requests a minute per client IP; the rest get 429."
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    rate_limit_options {
      conform_action = "allow"
      exceed_action  = "deny(429)"
      enforce_on_key = "IP"
      rate_limit_threshold {
        count        = var.requests_per_minute_per_ip
        interval_sec = 60
      }
    }
  }

  rule {
    action      = "allow"
    priority    = 2147483647
    description = "Default: allow (the throttle rule above applies first)."
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }

  # Log4j-style and other preconfigured WAF rules are not in scope: the API takes JSON only.
  #checkov:skip=CKV_GCP_73:The API accepts only validated JSON records; the preconfigured Log4j WAF rule adds latency without a matching risk here
}

resource "google_compute_backend_service" "run" {
  project               = var.project_id
  name                  = "${var.name}-backend"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  security_policy       = google_compute_security_policy.edge.id

  backend {
    group = google_compute_region_network_endpoint_group.run.id
  }

  log_config {
    enable      = true
    sample_rate = var.log_sample_rate
  }
}

resource "google_compute_url_map" "edge" {
  project         = var.project_id
  name            = "${var.name}-urlmap"
  default_service = google_compute_backend_service.run.id
}

resource "google_compute_managed_ssl_certificate" "edge" {
  project = var.project_id
  name    = "${var.name}-cert"

  managed {
    domains = [var.domain]
  }
}

resource "google_compute_ssl_policy" "modern" {
  project         = var.project_id
  name            = "${var.name}-tls"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "edge" {
  project          = var.project_id
  name             = "${var.name}-https"
  url_map          = google_compute_url_map.edge.id
  ssl_certificates = [google_compute_managed_ssl_certificate.edge.id]
  ssl_policy       = google_compute_ssl_policy.modern.id
}

resource "google_compute_global_address" "edge" {
  project = var.project_id
  name    = "${var.name}-ip"
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "${var.name}-https"
  target                = google_compute_target_https_proxy.edge.id
  port_range            = "443"
  ip_address            = google_compute_global_address.edge.address
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
