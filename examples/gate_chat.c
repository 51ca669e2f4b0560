/*
 * gate_chat.c - gate a (simulated) chat completion with libdiscern-client.
 *
 * The shape every application follows: ask discernd before the AI call, make the
 * call only when allowed, then report the real token counts (or cancel when the
 * call failed). The guard helper does the bookkeeping; the "completion" here is
 * simulated so that the example runs anywhere.
 *
 *   gate_chat [--server ADDR] [--key dsk_...] [--user U] [--team T] [--purpose P]
 *             [--max-tokens N] [--fallback allow|refuse] [--fail] PROMPT
 *
 * Over TCP discernd wants a key (--key, default DISCERN_KEY), sent with `auth` on
 * every (re)connect by the library.
 *
 * Build against an installed library:
 *   cc gate_chat.c $(pkg-config --cflags --libs discern-client) -o gate_chat
 *
 * Exit: 0 answered, 10 throttled, 11 refused, 4 discernd unreachable (fallback
 * refuse), 1 any other error, 5 the completion itself failed (--fail).
 */
#include <discern/client.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chat {
    const char *prompt;
    int64_t max_tokens;
    int fail; /* simulate a provider error */
    char reply[512];
} chat;

/* The "AI call": a real application calls its provider's API here and reads the
 * token counts from the response's usage field. */
static int complete(void *ud, dsc_guard_usage *usage) {
    chat *c = ud;
    if (c->fail) return 1; /* non-zero: the guard cancels the hold */
    snprintf(c->reply, sizeof c->reply, "You said: \"%s\". Noted.", c->prompt);
    usage->input_tokens = (int64_t)strlen(c->prompt) / 4 + 1;
    usage->output_tokens = (int64_t)strlen(c->reply) / 4 + 1;
    if (usage->output_tokens > c->max_tokens) usage->output_tokens = c->max_tokens;
    usage->latency_s = 0.8;
    return 0;
}

static const char *arg(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "gate_chat: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    const char *server = "127.0.0.1:7878", *fallback = "refuse", *key = getenv("DISCERN_KEY");
    dsc_client_check_request rq = {.subject = {.user = "demo"},
                                   .provider = "openai",
                                   .model = "gpt-4o-mini",
                                   .purpose = "chat"};
    chat ch = {.max_tokens = 256};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--server") == 0)
            server = arg(argc, argv, &i);
        else if (strcmp(argv[i], "--key") == 0)
            key = arg(argc, argv, &i);
        else if (strcmp(argv[i], "--user") == 0)
            rq.subject.user = arg(argc, argv, &i);
        else if (strcmp(argv[i], "--team") == 0)
            rq.subject.team = arg(argc, argv, &i);
        else if (strcmp(argv[i], "--purpose") == 0)
            rq.purpose = arg(argc, argv, &i);
        else if (strcmp(argv[i], "--max-tokens") == 0)
            ch.max_tokens = atoll(arg(argc, argv, &i));
        else if (strcmp(argv[i], "--fallback") == 0)
            fallback = arg(argc, argv, &i);
        else if (strcmp(argv[i], "--fail") == 0)
            ch.fail = 1;
        else
            ch.prompt = argv[i];
    }
    if (!ch.prompt || ch.max_tokens <= 0) {
        fputs("usage: gate_chat [--server ADDR] [--user U] [--max-tokens N] PROMPT\n", stderr);
        return 2;
    }
    rq.input_tokens = (int64_t)strlen(ch.prompt) / 4 + 1;
    rq.output_tokens = ch.max_tokens; /* the upper bound is what gets held */

    dsc_error err;
    dsc_client *c =
        dsc_client_new(server, &(dsc_client_options){.timeout_ms = 1000, .key = key}, &err);
    if (!c) {
        fprintf(stderr, "gate_chat: %s\n", err.message);
        return 2;
    }
    dsc_guard_options go = {.fallback = strcmp(fallback, "allow") == 0 ? DSC_GUARD_FALLBACK_ALLOW
                                                                       : DSC_GUARD_FALLBACK_REFUSE};
    dsc_guard_ticket t;
    int answered = -1, rc;
    dsc_status st = dsc_guard_run(c, &rq, &go, complete, &ch, &t, &answered, &err);
    if (t.fallback_applied) fprintf(stderr, "gate_chat: discernd did not answer (%s)\n", t.message);
    if (answered == 0) {
        printf("%s\n", ch.reply);
        if (st != DSC_OK) fprintf(stderr, "gate_chat: settle failed: %s\n", err.message);
        rc = 0;
    } else if (answered > 0) {
        fprintf(stderr, "gate_chat: the completion failed; the hold was cancelled\n");
        rc = 5;
    } else if (st != DSC_OK) {
        fprintf(stderr, "gate_chat: %s (%s)\n", err.message, dsc_status_wire(st));
        rc = 1;
    } else if (t.fallback_applied) {
        rc = 4;
    } else {
        fprintf(stderr, "gate_chat: %s: %s\n", dsc_decision_name(t.check.decision), t.message);
        rc = t.check.decision == DSC_DECISION_THROTTLE ? 10 : 11;
    }
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    return rc;
}
