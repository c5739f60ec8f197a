"""A corpus of realistic *fake* secrets and realistic non-secrets for secret_mask's detectors.

Every secret here is generated from a fixed seed in the shape of the real thing
(prefixes, lengths, alphabets, checksums) and is not a credential of anything.
Each secret sits in the kind of text it is found in (headers, URLs, tool
arguments, log lines, error messages), so the test checks both that the secret
goes and that the text around it stays.

`SECRETS`: (detector, text, secret) — masking `text` must remove `secret`.
`NON_SECRETS`: texts that must come out unchanged.
`SENSITIVE_KEYS` / `PLAIN_KEYS`: attribute keys for the key-name rule.
"""
from __future__ import annotations

import base64
import random
import string
import uuid

_rng = random.Random(20241105)
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def _tok(n: int, alphabet: str = ALNUM) -> str:
    classes = [cls for cls in (string.digits, string.ascii_uppercase, string.ascii_lowercase)
               if any(c in alphabet for c in cls)]
    while True:
        t = "".join(_rng.choice(alphabet) for _ in range(n))
        # Random tokens of this length virtually always mix the alphabet's classes; make it certain.
        if all(any(c in cls for c in t) for cls in classes):
            return t


def _luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(_rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        cand = body + check
        total = 0
        for i, ch in enumerate(reversed(cand)):
            d = int(ch)
            if i % 2:
                d *= 2
                if d > 9:
                    d -= 9
            total += d
        if total % 10 == 0:
            return cand
    raise AssertionError("unreachable")


def _jwt() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(
        f'{{"sub":"{_rng.randrange(10**6)}","name":"user","iat":{1700000000 + _rng.randrange(10**6)}}}'.encode()
    ).rstrip(b"=").decode()
    return f"{header}.{payload}.{_tok(43, B64URL)}"


def _pem(kind: str) -> str:
    lines = "\n".join(_tok(64, ALNUM + "+/") for _ in range(4))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n{_tok(20, ALNUM + '+/')}==\n-----END {kind}PRIVATE KEY-----"


def _secrets() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []

    def add(kind: str, template: str, secret: str) -> None:
        out.append((kind, template.format(s=secret), secret))

    for t in ("Authorization: Bearer {s}", "curl -H 'Authorization: Bearer {s}' https://api.example.com/v1/runs",
              "bearer {s}", "sending request with Bearer {s} to upstream", "{{\"auth\": \"Bearer {s}\"}}",
              "BEARER {s}", "proxy auth failed for Bearer {s}"):
        add("bearer", t, _tok(_rng.choice([32, 40, 64]), ALNUM + "-._~"))
    for user, pw in (("admin", "hunter2!x"), ("svc-agent", "Pa55w0rd"), ("alice", "correct-horse-7"),
                     ("deploy", "s3cr3t+val"), ("root", "toor1234"), ("api", _tok(16))):
        cred = base64.b64encode(f"{user}:{pw}".encode()).decode()
        add("basic", _rng.choice(["Authorization: Basic {s}", "basic {s}", "auth header was Basic {s} (rejected)"]),
            cred)
    for _ in range(9):
        add("jwt", _rng.choice(["token {s} expired", "{{\"id_token\": \"{s}\"}}", "jwt={s}", "got {s} from idp",
                                "Set-Cookie: session={s}; HttpOnly"]), _jwt())
    for t in ("OPENAI_API_KEY={s}", "client = OpenAI(api_key=\"{s}\")", "using key {s} for gpt-4o",
              "headers={{'Authorization': '{s}'}}", "{s}"):
        add("openai_key", t, "sk-proj-" + _tok(_rng.choice([48, 74, 156]), B64URL))
    for t in ("legacy key {s} rotated", "OPENAI_KEY {s}", "sk {s}"):
        add("openai_key", t, "sk-" + _tok(48))
    for t in ("ANTHROPIC_API_KEY={s}", "x-api-key: {s}", "anthropic.Anthropic(api_key='{s}')", "key: {s}",
              "failed with {s}"):
        add("anthropic_key", t, "sk-ant-api03-" + _tok(95, B64URL) + "AA")
    for t in ("aws configure set aws_access_key_id {s}", "AccessKeyId: {s}", "found {s} in env",
              "arn and key {s}", "{{\"AccessKeyId\": \"{s}\"}}"):
        add("aws_access_key_id", t, _rng.choice(["AKIA", "ASIA"]) + _tok(16, string.ascii_uppercase + "234567"))
    for t in ("aws_secret_access_key = {s}", "AWS_SECRET_ACCESS_KEY={s}", "{{\"SecretAccessKey\": \"{s}\"}}",
              "secret_access_key: {s}", "aws_secret={s}"):
        add("aws_secret_key", t, _tok(40, ALNUM + "/+"))
    for _ in range(3):
        key_id = "AKIA" + _tok(16, string.ascii_uppercase + "234567")
        secret = _tok(40, ALNUM + "/+")
        out.append(("aws_secret_key", f"credentials {key_id} / {secret}", secret))
    for prefix in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"):
        add("github_token", _rng.choice(["git clone https://x-access-token:{s}@github.com/org/repo",
                                         "GITHUB_TOKEN={s}", "token {s}", "using {s} for the API"]),
            prefix + _tok(36))
    for t in ("GH_PAT {s}", "pat: {s}"):
        add("github_token", t, "github_pat_11" + _tok(20) + "_" + _tok(59))
    for prefix in ("xoxb", "xoxp", "xoxa", "xoxs"):
        add("slack_token", _rng.choice(["SLACK_BOT_TOKEN={s}", "slack client with {s}", "posting as {s}"]),
            f"{prefix}-{_rng.randrange(10**11, 10**12)}-{_rng.randrange(10**11, 10**12)}-{_tok(24)}")
    add("slack_token", "app token {s}", f"xapp-1-A{_tok(10, string.ascii_uppercase + string.digits)}-"
                                        f"{_rng.randrange(10**12, 10**13)}-{_tok(64, string.hexdigits.lower())}")
    for prefix in ("sk_live_", "rk_live_", "sk_test_", "rk_live_"):
        add("stripe_key", _rng.choice(["stripe.api_key = '{s}'", "STRIPE_SECRET={s}", "charging with {s}"]),
            prefix + _tok(_rng.choice([24, 99])))
    for t in ("https://maps.googleapis.com/maps/api/geocode/json?address=x&key={s}", "GOOGLE_API_KEY={s}",
              "gemini client key {s}", "{{\"apiKey\": \"{s}\"}}"):
        add("google_api_key", t, "AIza" + _tok(35, B64URL))
    for kind in ("RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "):
        add("private_key", _rng.choice(["key file contents:\n{s}\n", "{s}", "loaded {s}"]), _pem(kind))
    truncated = "-----BEGIN RSA PRIVATE KEY-----\n" + _tok(64, ALNUM + "+/") + "\n" + _tok(30, ALNUM + "+/")
    out.append(("private_key", "attribute value truncated: " + truncated, truncated))
    for scheme, user, host in (("postgres", "app", "db.internal:5432/orders"), ("mysql", "root", "10.0.0.5/shop"),
                               ("redis", "default", "cache:6379/0"), ("amqp", "agent", "mq.internal:5672/"),
                               ("https", "bot", "git.example.com/org/repo.git"),
                               ("mongodb+srv", "svc", "cluster0.example.net/db")):
        pw = _tok(_rng.choice([8, 12, 20]), ALNUM + "!$%*")
        add("url_password", f"connecting to {scheme}://{user}:{{s}}@{host}", pw)
    for t in ("GET /v1/export?user=bob&password={s}&format=csv", "login failed: password={s}",
              "token={s}", "retrying with api_key={s} after 429", "db_password: {s}", "{{\"password\": \"{s}\"}}",
              "client_secret={s}&grant_type=client_credentials", "X-Api-Token: {s}", "passwd={s}",
              "https://hooks.example.com/callback?access_token={s}", "session_id={s}; path=/",
              "'refresh_token': '{s}'", "PGPASSWORD={s} psql -h db", "timed out calling tool (token={s})",
              "set-cookie: {s}"):
        add("credential_pair", t, _tok(_rng.choice([10, 16, 24, 32]), ALNUM + "!#%^*"))
    for prefix, length in (("4", 16), ("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                           ("6011", 16), ("65", 16), ("35", 16), ("4", 19), ("36", 14)):
        number = _luhn_complete(prefix, length)
        style = _rng.randrange(3)
        if style == 1 and length == 16:
            number = " ".join(number[i:i + 4] for i in range(0, 16, 4))
        elif style == 2 and length == 16:
            number = "-".join(number[i:i + 4] for i in range(0, 16, 4))
        add("card_number", _rng.choice(["card {s} declined", "payment_method: {s}", "charged {s} for $20.00",
                                        "{s}", "cc={s}&exp=12/29"]), number)
    out.extend(_issue_9_secrets())
    return out


def _pem_body(lines: int = 6) -> list[str]:
    return [_tok(64, ALNUM + "+/") for _ in range(lines)] + [_tok(28, ALNUM + "+/") + "=="]


def _gcp_service_account(body: list[str]) -> str:
    """A GCP service-account key file as `json.dumps` writes it: the PEM's newlines are `\\n` escapes."""
    pem = "-----BEGIN PRIVATE KEY-----\\n" + "\\n".join(body) + "\\n-----END PRIVATE KEY-----\\n"
    project = f"agent-prod-{_rng.randrange(1000, 9999)}"
    key_id, client_id = _tok(40, "0123456789abcdef"), _rng.randrange(10**20, 10**21)
    return (f'{{"type": "service_account", "project_id": "{project}", "private_key_id": "{key_id}", '
            f'"private_key": "{pem}", "client_email": "agent-runner@{project}.iam.gserviceaccount.com", '
            f'"client_id": "{client_id}", "auth_uri": "https://accounts.google.com/o/oauth2/auth", '
            '"token_uri": "https://oauth2.googleapis.com/token", "universe_domain": "googleapis.com"}')


def _escape_json(text: str) -> str:
    """`text` as the content of a JSON string (what a tool call's `arguments` holds)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _issue_9_secrets() -> list[tuple[str, str, str]]:
    """What `secret_mask: {}` leaked in issue 9, in the places agent platforms put it."""
    out: list[tuple[str, str, str]] = []

    def add(kind: str, template: str, secret: str) -> None:
        out.append((kind, template.replace("{s}", secret), secret))

    # A PEM block after a sensitive key: the whole block goes, not just `-----BEGIN`.
    body = _pem_body()
    sa_json = _gcp_service_account(body)
    for line in (body[0], body[3], body[-1]):
        out.append(("private_key", sa_json, line))
    body = _pem_body()
    call = '{"name": "deploy_model", "arguments": "' + _escape_json('{"credentials": ' + _gcp_service_account(body)
                                                                    + ', "region": "us-central1"}') + '"}'
    for line in (body[0], body[-1]):
        out.append(("private_key", call, line))
    body = _pem_body(4)
    for t in ('private_key = "-----BEGIN EC PRIVATE KEY-----\n{s}\n-----END EC PRIVATE KEY-----"',
              "ssh_private_key: -----BEGIN OPENSSH PRIVATE KEY-----\n{s}\n-----END OPENSSH PRIVATE KEY-----",
              ('{"level": "debug", "msg": "loaded signing key", "pem": "-----BEGIN RSA PRIVATE KEY-----\\n{s}'
               '\\n-----END RSA PRIVATE KEY-----\\n"}')):
        sep = "\\n" if "\\n{s}" in t else "\n"
        secret = sep.join(_pem_body(4))
        add("private_key", t, secret)
    # AWS: key id and secret separated by blanks and the secret's name (shell history, CLI help, logs).
    for t in ("aws_access_key_id {k} aws_secret_access_key {s}", "aws configure set aws_secret_access_key {s}",
              "--aws-secret-access-key {s} --region us-east-1", "SecretAccessKey    {s}",
              "AWS_SECRET_ACCESS_KEY '{s}'"):
        key_id = "AKIA" + _tok(16, string.ascii_uppercase + "234567")
        add("aws_secret_key", t.replace("{k}", key_id), _tok(40, ALNUM + "/+"))
    # Secrets inside a JSON string inside JSON: tool-call arguments, nested once and twice.
    for t in (('{"id": "call_8Hx2", "type": "function", "function": {"name": "query_db", "arguments": '
               '"{\\"sql\\": \\"select 1\\", \\"db_password\\": \\"{s}\\"}"}}'),
              ('{"tool": "http_get", "arguments": "{\\"url\\": \\"https://api.example.com\\", '
               '\\"api_key\\": \\"{s}\\"}"}'),
              '{"input": "{\\"arguments\\": \\"{\\\\\\"token\\\\\\": \\\\\\"{s}\\\\\\"}\\"}"}',
              "{'arguments': '{\\'password\\': \\'{s}\\'}'}"):
        add("credential_pair", t, _tok(_rng.choice([12, 20, 32]), ALNUM + "!#%^*"))
    # Name/value pairs as JSON text (Kubernetes env, ECS task definitions, AWS tags).
    for t in ('[{"name": "DB_PASSWORD", "value": "{s}"}, {"name": "DB_HOST", "value": "db.internal"}]',
              '{"env": [{"name": "OPENAI_API_KEY", "value": "{s}"}]}',
              '{"Key": "api_token", "Value": "{s}"}',
              '"containerDefinitions": [{"environment": [{"name": "STRIPE_SECRET","value":"{s}"}]}]',
              '{"arguments": "{\\"env\\": [{\\"name\\": \\"REDIS_PASSWORD\\", \\"value\\": \\"{s}\\"}]}"}',
              "env=[{'name': 'DB_PASSWORD', 'value': '{s}'}, {'name': 'DB_HOST', 'value': 'db'}]"):
        add("credential_pair", t, _tok(_rng.choice([10, 16, 24]), ALNUM + "!#%^*"))
    add("credential_pair", '[{"name": "SMTP_PASSWORD", "value": "{s}"}]', "correct horse battery staple 42")
    # Azure storage and service bus connection strings.
    for t in ("DefaultEndpointsProtocol=https;AccountName=agentlogs;AccountKey={s};EndpointSuffix=core.windows.net",
              'AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=x;AccountKey={s}"',
              ("Endpoint=sb://agents.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
               "SharedAccessKey={s}")):
        add("credential_pair", t, _tok(86, ALNUM + "+/") + "==")
    # redis URLs with a password and no user.
    for t in ("connecting to redis://:{s}@cache.internal:6379/0", "REDIS_URL=rediss://:{s}@redis-prod.cache.amazonaws.com:6380",
              "celery broker redis://:{s}@10.0.3.7:6379/1 unreachable"):
        add("url_password", t, _tok(_rng.choice([12, 24]), ALNUM + "!$%*"))
    # Hugging Face access tokens.
    for t in ("huggingface-cli login --token {s}", "loaded {s} from ~/.cache/huggingface/token",
              'InferenceClient(model="meta-llama/Llama-3.1-8B-Instruct", token="{s}")', "{s}",
              "401 Unauthorized for hf token {s}"):
        add("huggingface_token", t, "hf_" + _tok(34, string.ascii_letters))
    # SendGrid API keys.
    for t in ('sg = SendGridAPIClient("{s}")', "mail sent with {s}", "SG key {s} revoked", "{s}"):
        add("sendgrid_key", t, "SG." + _tok(22, B64URL) + "." + _tok(43, B64URL))
    # Slack incoming webhooks (the URL is the credential; the host is kept).
    for t in ("posting alert to https://hooks.slack.com/services/{s}", '{"webhook_url": "https://hooks.slack.com/services/{s}"}',
              "curl -X POST -d @payload.json https://hooks.slack.com/services/{s}"):
        team = "T" + _tok(10, string.ascii_uppercase + string.digits)
        channel = "B" + _tok(10, string.ascii_uppercase + string.digits)
        token = _tok(24)
        out.append(("slack_webhook", t.replace("{s}", f"{team}/{channel}/{token}"), token))
    token = _tok(32, string.hexdigits.lower())
    out.append(("slack_webhook", f"workflow trigger https://hooks.slack.com/workflows/T0123ABCD/A0456EFGH/4700123456/{token}",
                token))
    # Telegram bot tokens (the bot id before the colon is public; the part after it is the secret).
    for t in ("https://api.telegram.org/bot{id}:{s}/sendMessage", 'bot = telebot.TeleBot("{id}:{s}")',
              "TELEGRAM_BOT_TOKEN={id}:{s}", "using telegram bot {id}:{s} for alerts"):
        bot_id = str(_rng.randrange(10**8, 10**10))
        add("telegram_bot_token", t.replace("{id}", bot_id), "AA" + _tok(33, B64URL))
    return out


def _non_secrets() -> list[str]:
    r = random.Random(99)
    uuids = [str(uuid.UUID(int=r.getrandbits(128))) for _ in range(8)]
    out = [
        # model names and gen_ai values
        "gpt-4o", "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20241022", "claude-3-opus-20240229", "o3-mini",
        "llama-3.1-70b-instruct", "gemini-1.5-pro-002", "text-embedding-3-large", "mistral-large-2407",
        "chatcmpl-AbC123xyz789", "call_zzzgEOzdmenCkhvMdgaKjIg8", "msg_01XFDUDYJgAACzvnptvVoYEL",
        "tool_calls", "stop", "length", "execute_tool web_search", "chat gpt-4o",
        # ids and routes
        *uuids, f"/v1/agents/{uuids[0]}/runs", f"urn:uuid:{uuids[1]}",
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "0af7651916cd43dd8448eb211c80319c",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV", "3f9a1c2b0d4e5f6a7b8c9d0e1f2a3b4c5d6e7f80",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        # paths, hosts, urls
        "/app/agent/step_3.py", "/var/log/otelpipe/agent.log", "C:\\Users\\runner\\work\\agent\\main.py",
        "https://internal-api.example.com/api/users/42/orders?page=2&sort=desc",
        "https://user@git.example.com/org/repo.git", "ssh://git@github.com:22/org/repo.git",
        "postgres://db.internal:5432/orders", "http://localhost:8080/healthz", "api.openai.com",
        "ip-10-0-166-12.ec2.internal", "agent-orchestrator-e8gxd6ncf1-nchcr", "10.1.138.30", "[2001:db8::1]:443",
        "s3://my-bucket/path/to/object.json", "arn:aws:iam::123456789012:role/agent-runner",
        # base64 that is not a key, and data
        "SGVsbG8sIHdvcmxkIQ==", "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
        "eyes on the prize", "keyboard shortcut ctrl-k", "Basic authentication is disabled",
        "the Bearer scheme is required", "bearer token missing", "Basic realm=\"agents\"",
        # token counts and prose about credentials
        "max_tokens: 4096", "input_tokens=512 output_tokens=128", "gen_ai.usage.input_tokens", "tokens: 1234",
        "token_count=77", "used 15000 tokens of the 128000 token context window",
        "Reset your password using the link we sent", "password: required", "token: null",
        "secret rotation scheduled for friday", "the api key header is missing",
        "Please summarize the previous conversation and call the tool with arguments",
        "prompt: the customer asked about invoice refund policy",
        "Traceback (most recent call last):\n  File \"/app/agent/step_0.py\", line 248, in run",
        "httpx.ReadTimeout: timed out", "upstream timeout", "context deadline exceeded",
        "SELECT * FROM orders WHERE customer_email = 'user18907@example.com' AND id = 42",
        "user18907@example.com", "{\"query\": \"refund policy\", \"top_k\": 5}", "risk-assessment-tool",
        "task-force-alpha", "desk-lamp-123", "sk-learn", "ask-me-anything", "xoxo from the team",
        "ghost_protocol_v2", "AIzaleaDemoString", "AKIA is the prefix of AWS key ids",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUeXample\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEexample\n-----END PUBLIC KEY-----",
        # numbers that are not cards
        "1750000692453690204", "1750000692453", "order 1234567890123", "4111 1111 1111 1112",
        "978-0-13-468599-1", "+1 415 555 0132", "0.4111111111111111", "v1.29.0", "2024-11-05T13:37:00Z",
        "12:30:45.123", "version=1.2.3", "status=200 duration_ms=1234", "x=1&y=2&page=3",
        "Content-Type: application/json", "Accept-Encoding: gzip, deflate", "key=value", "id=12345",
        "session ended after 30s", "cookie consent banner shown", "credential provider chain exhausted",
        "the private key file is /etc/ssl/private/agent.key",
        # look-alikes of the secrets issue 9 added
        "hf_hub_download(repo_id='gpt2', filename='config.json')", "export HF_HOME=/data/hf_cache",
        "hf_transfer enabled for faster downloads", "from huggingface_hub import hf_hub_url",
        "hf_abcdefghijklmnopqrstuvwxyzabcdefgh", "chf_rate=1.2",
        "SG. Smith approved the refund", "region SG.1 is degraded", "see SG.example.com for details",
        "SG.abc.def", "TSG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq",
        "https://api.slack.com/messaging/webhooks", "https://hooks.slack.com/", "https://hooks.slack.com/services/",
        "https://hooks.slack.com/services/new", "https://app.slack.com/client/T01234567/C0123ABCD",
        "https://slack.com/help/articles/115005265063-Incoming-webhooks-for-Slack",
        "123456789:42", "ratio 16:9", "elapsed 12:30:45", "trace 1750000000:0 ok", "10.0.0.1:6379",
        "order 123456789:ABC", "user 123456789:Alice", "1700000000:AAAAAAAA", "bot 123456789 started",
        "redis://cache.internal:6379/0", "redis://localhost:6379", "http://:8080/health", "redis://:@cache:6379",
        "DefaultEndpointsProtocol=https;AccountName=agentlogs;EndpointSuffix=core.windows.net",
        "SharedAccessKeyName=RootManageSharedAccessKey", "storage account key rotated on friday",
        "aws_secret_access_key is not set", "aws_secret_access_key missing from profile default",
        "the SecretAccessKey field is required",
        '[{"name": "DB_HOST", "value": "db.internal"}, {"name": "DB_PORT", "value": "5432"}]',
        '{"name": "max_tokens", "value": "4096"}', '{"name": "password_length", "value": "16"}',
        '{"name": "session.id", "value": "3f2c8a4e-9b1d-4c7e-a5f3-0d8e6b2a1c94"}',
        '{"name": "DB_PASSWORD", "value": ""}', '{"name": "API_KEY", "value": "null"}',
        "[{'name': 'DB_HOST', 'value': 'db.internal'}]", "{'name': 'password_length', 'value': '16'}",
        '{"name": "search", "arguments": "{\\"query\\": \\"refund policy\\", \\"top_k\\": 5}"}',
        '{"arguments": "{\\"path\\": \\"C:\\\\\\\\Users\\\\\\\\runner\\"}"}',
        '"-----BEGIN CERTIFICATE-----\\nMIIBszCCAVmgAwIBAgIUeXample\\n-----END CERTIFICATE-----\\n"',
        '{"public_key": "-----BEGIN PUBLIC KEY-----\\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEexample\\n'
        '-----END PUBLIC KEY-----"}',
    ]
    return out


SECRETS: list[tuple[str, str, str]] = _secrets()
NON_SECRETS: list[str] = _non_secrets()

SENSITIVE_KEYS = [
    "password", "db.password", "DB_PASSWORD", "passwd", "user.pwd", "passphrase", "client_secret", "secret",
    "app.secret_key", "token", "access_token", "refresh_token", "x-api-token", "X-Auth-Token", "id_token",
    "api_key", "apiKey", "APIKey", "x-api-key", "OPENAI_API_KEY", "apikey", "authorization",
    "http.request.header.authorization", "http.response.header.set-cookie", "Proxy-Authorization",
    "cookie", "http.request.header.cookie", "session_id", "sessionId", "credentials",
    "session_token", "session.token", "sessionid", "set-cookie", "http.response.header.set-cookie",
    "AccountKey", "storage.account_key", "azure.storage.accountkey",
    "aws.credential", "private_key", "privateKey", "tls.private_key", "access_key", "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY", "github.token", "slack_bot_token", "x-amz-security-token",
]
PLAIN_KEYS = [
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.request.max_tokens", "max_tokens",
    "llm.token_count.prompt", "llm.token_count.total", "tokens", "token_count", "oauth.token.type",
    "token.expires_in", "k8s.secret.name", "secret.version", "password.length", "cookie.name", "session.duration",
    "gen_ai.conversation.id", "http.route", "url.full", "service.name", "user.id", "authentication.method",
    "keyboard.layout", "api.version", "access.log.path", "credential.provider", "private.network",
    "http.request.header.content-type", "tokenizer", "tokenizer.name", "gen_ai.tool.call.id",
    # semantic-convention identifiers: kept by default (`identifier_keys`)
    "session.id", "session.previous_id", "enduser.id", "enduser.pseudo.id", "client.id", "Session.Id",
    "AccountName",
]
