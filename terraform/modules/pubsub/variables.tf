variable "project_id" {
  description = "Google Cloud project of the topics and subscriptions."
  type        = string
}

variable "topic_name" {
  description = "Records topic (challenge-latam-records-<env>); the app publishes here (PUBSUB_TOPIC)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.topic_name))
    error_message = "topic_name must be a valid Pub/Sub name (3 to 255 characters, starting with a letter)."
  }
}

variable "subscription_name" {
  description = "BigQuery subscription of the records topic."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.subscription_name))
    error_message = "subscription_name must be a valid Pub/Sub name."
  }
}

variable "dead_letter_topic_name" {
  description = "Dead-letter topic of the records subscription."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.dead_letter_topic_name))
    error_message = "dead_letter_topic_name must be a valid Pub/Sub name."
  }
}

variable "dead_letter_subscription_name" {
  description = "BigQuery subscription that writes dead letters to their table."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.dead_letter_subscription_name))
    error_message = "dead_letter_subscription_name must be a valid Pub/Sub name."
  }
}

variable "records_table" {
  description = "Records table as project.dataset.table."
  type        = string
}

variable "dead_letter_table" {
  description = "Dead-letter table as project.dataset.table."
  type        = string
}

variable "records_table_ref" {
  description = "Project, dataset and table ids of the records table (for the agent's table-scoped grant)."
  type = object({
    project    = string
    dataset_id = string
    table_id   = string
  })
}

variable "dead_letter_table_ref" {
  description = "Project, dataset and table ids of the dead-letter table."
  type = object({
    project    = string
    dataset_id = string
    table_id   = string
  })
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before a message is dead-lettered (Pub/Sub allows 5 to 100)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be from 5 to 100."
  }
}

variable "retry_minimum_backoff" {
  description = "Shortest wait before redelivery, as a duration in seconds (\"10s\")."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.retry_minimum_backoff))
    error_message = "retry_minimum_backoff must be a duration in seconds such as 10s."
  }
}

variable "retry_maximum_backoff" {
  description = "Longest wait before redelivery (at most 600s)."
  type        = string
  default     = "300s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.retry_maximum_backoff)) && tonumber(trimsuffix(var.retry_maximum_backoff, "s")) <= 600
    error_message = "retry_maximum_backoff must be a duration in seconds, at most 600s."
  }
}

variable "subscription_retention" {
  description = "How long a subscription keeps unacked messages (10m to 7d, \"604800s\")."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.subscription_retention)) && tonumber(trimsuffix(var.subscription_retention, "s")) >= 600 && tonumber(trimsuffix(var.subscription_retention, "s")) <= 604800
    error_message = "subscription_retention must be from 600s to 604800s."
  }
}

variable "topic_retention" {
  description = "How long the topics keep published messages for replay (10m to 31d)."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.topic_retention)) && tonumber(trimsuffix(var.topic_retention, "s")) >= 600 && tonumber(trimsuffix(var.topic_retention, "s")) <= 2678400
    error_message = "topic_retention must be from 600s to 2678400s."
  }
}

variable "labels" {
  description = "Labels for topics and subscriptions."
  type        = map(string)
  default     = {}
}
