"""Every OpenTelemetry GenAI name aiotongyi emits, in one place (pure, no imports).

Pinned to the GenAI semantic conventions as released in semantic-conventions
v1.41.0 (``docs/gen-ai/gen-ai-spans.md`` and ``gen-ai-metrics.md`` there).
The conventions have since moved to their own repository and are being
renamed: a later rename is an edit of this module only.
"""

from __future__ import annotations

SEMCONV_VERSION = "1.41.0"

# -- span attributes ---------------------------------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

REQUEST_MODEL = "gen_ai.request.model"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"

RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"

USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"

# Opt-in content (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT).
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"

TOKEN_TYPE = "gen_ai.token.type"

# -- values ------------------------------------------------------------------------
OPERATION_CHAT = "chat"
OPERATION_EMBEDDINGS = "embeddings"
# No well-known value exists for DashScope; Alibaba's own instrumentation of
# the official SDK uses this one.
PROVIDER_DASHSCOPE = "dashscope"
TOKEN_TYPE_INPUT = "input"
TOKEN_TYPE_OUTPUT = "output"

# -- metrics (name, unit, description) ---------------------------------------------
METRIC_OPERATION_DURATION = ("gen_ai.client.operation.duration", "s", "GenAI operation duration.")
METRIC_TOKEN_USAGE = (
    "gen_ai.client.token.usage",
    "{token}",
    "Number of input and output tokens used.",
)
METRIC_TIME_TO_FIRST_CHUNK = (
    "gen_ai.client.operation.time_to_first_chunk",
    "s",
    "Time to receive the first chunk of a streaming response.",
)
METRIC_TIME_PER_OUTPUT_CHUNK = (
    "gen_ai.client.operation.time_per_output_chunk",
    "s",
    "Time per output chunk, for each chunk after the first one.",
)

# The ExplicitBucketBoundaries the conventions give.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

# -- aiotongyi's own names (no convention covers them) ------------------------------
EVENT_RETRY = "aiotongyi.retry"
RETRY_ATTEMPT = "aiotongyi.retry.attempt"
RETRY_DELAY = "aiotongyi.retry.delay"
CLOSED_EARLY = "aiotongyi.stream.closed_early"
CANCELLED = "aiotongyi.stream.cancelled"
REQUEST_ID = "aiotongyi.request_id"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
