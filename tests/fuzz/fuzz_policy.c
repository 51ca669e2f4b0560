/*
 * fuzz_policy.c - libFuzzer target for the policy loader (core/policy*.c): the input
 * becomes the one .lua file of a policy folder, which dsc_policy_set_load compiles
 * and checks as at start or reload; a set that loads gets a VM (the sandbox runs the
 * file's top-level chunk under its load budget) and one decision, so the deadline
 * hook and the memory cap are under the fuzzer too.
 */
#include "fuzz_util.h"

#include "discern/policy.h"

#include <stdlib.h>

static void decide_once(dsc_policy_set *set) {
    static const dsc_policy_limits lim = {
        .memory_bytes = 4u << 20, .time_budget_ns = 2000000, .load_budget_ns = 20000000};
    dsc_error err;
    dsc_policy_vm *vm = dsc_policy_vm_new(set, NULL, NULL, &lim, &err);
    if (!vm) return;
    dsc_policy_input in = {.subject = {.org = "o", .team = "t", .user = "u"},
                           .provider = "openai",
                           .model = "gpt-4o",
                           .input_tokens = 100,
                           .output_tokens = 200,
                           .purpose = "chat",
                           .now = 1767225600};
    dsc_decision d;
    (void)dsc_policy_vm_decide(vm, &in, &d);
    dsc_policy_vm_free(vm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir();
    if (!fuzz_write(dir, "fuzzed.lua", data, size)) abort();
    dsc_error err;
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    if (!set) return 0;
    decide_once(set);
    dsc_policy_set_unref(set);
    return 0;
}
