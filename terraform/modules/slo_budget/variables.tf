variable "goal" {
  description = "SLO objective as a fraction of good events, for example 0.9995."
  type        = number

  validation {
    condition     = var.goal > 0 && var.goal < 1
    error_message = "goal must be strictly between 0 and 1."
  }
}

variable "rolling_period_days" {
  description = "Rolling compliance period in days (the contract's SLOs use 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.rolling_period_days >= 1 && var.rolling_period_days <= 30 && floor(var.rolling_period_days) == var.rolling_period_days
    error_message = "rolling_period_days must be a whole number from 1 to 30 (Cloud Monitoring's limit)."
  }
}

variable "tiers" {
  description = "Burn-rate tiers: name, long window in seconds and burn rate (the contract's fast, medium, slow, slowest)."
  type = list(object({
    tier                = string
    long_window_seconds = number
    burn_rate           = number
  }))
  default = []

  validation {
    condition     = alltrue([for t in var.tiers : t.burn_rate > 0 && t.long_window_seconds > 0])
    error_message = "every tier needs a positive burn rate and long window."
  }
}
