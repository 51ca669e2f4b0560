/*
 * fuzz_query.c - libFuzzer target for the query string of GET /v1/budgets
 * (server/http_api.c): the input, as the query part of the URI, is parsed into a subject
 * by dsc__http_query_subject and that subject is looked up in a memory ledger with a
 * budget on every kind of selector, as the handler does.
 */
#include "fuzz_util.h"
#include "http.h"

#include <event2/keyvalq_struct.h>
#include <stdlib.h>

static dsc_ledger *ledger;

static void setup(void) {
    static const char *const selectors[] = {"*", "org:o", "team:*", "user:u", "key:*"};
    dsc_ledger_config cfg = {0};
    dsc_error err;
    if (!(ledger = dsc_ledger_new(&cfg, &err))) abort();
    for (size_t i = 0; i < sizeof selectors / sizeof selectors[0]; i++)
        if (dsc_ledger_budget(ledger,
                              &(dsc_budget_req){.selector = selectors[i],
                                                .metric = DSC_METRIC_GCO2E,
                                                .window = "month",
                                                .limit = 100.0},
                              NULL, NULL, &err) != DSC_OK)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ledger) setup();
    char *query = fuzz_cstr(data, size);
    if (!query) return 0;
    struct evkeyvalq q;
    dsc_subject subject;
    if (dsc__http_query_subject(query, &q, &subject) > 0) {
        dsc_budget_state states[64];
        size_t n = 0;
        dsc_error err;
        (void)dsc_ledger_preview(ledger, &subject, NULL, states, 64, &n, &err);
    }
    evhttp_clear_headers(&q);
    free(query);
    return 0;
}
