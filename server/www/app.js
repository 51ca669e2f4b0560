/*
 * app.js - the discern operator console: sign in with a key, then the key's role and
 * scope, the policy set, the budgets of the scope as bars, usage over the last 30
 * days as charts (the report method), the decision feed with filters, and an
 * estimate calculator that puts both methods side by side. Admins and managers may
 * set and delete budgets; for other roles the controls are not shown and the server
 * refuses them anyway (its forbidden / unauthorized message is what the page shows).
 *
 * Every string from the server reaches the page through textContent or an
 * attribute, never as markup.
 */
'use strict';

(function () {
    const api = window.DiscernApi, charts = window.DiscernCharts;
    const METRICS = ['gco2e', 'energy_wh', 'water_ml', 'pe_mj', 'cost', 'tokens', 'requests'];
    const UNITS = { gco2e: 'gCO2e', energy_wh: 'Wh', water_ml: 'mL', pe_mj: 'MJ', cost: 'cost',
        tokens: 'tokens', requests: 'requests' };
    const IMPACTS = [['energy_kwh', 'Energy', 'kWh'], ['gwp_kgco2eq', 'Carbon', 'kgCO2eq'],
        ['wcf_l', 'Water', 'L'], ['pe_mj', 'Primary energy', 'MJ'], ['adpe_kgsbeq', 'Abiotic resources', 'kgSbeq']];
    const DAY = 86400;
    const FEED_ROWS = 100, FEED_PAGES = 10, BUDGET_SUBJECTS = 12;

    const me = { role: '', scope: '', keyId: '', decisions: [] };

    const $ = (id) => document.getElementById(id);

    function node(tag, text, cls) {
        const e = document.createElement(tag);
        if (text !== undefined && text !== null) e.textContent = String(text);
        if (cls) e.className = cls;
        return e;
    }

    function clear(e) {
        while (e.firstChild) e.removeChild(e.firstChild);
        return e;
    }

    function showError(id, err) {
        $(id).textContent = err ? String(err) : '';
    }

    function canManage() {
        return me.role === 'admin' || me.role === 'manager';
    }

    function isoTime(t) {
        return t ? new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) : 'never';
    }

    /* "org:acme/team:infra" -> {org: "acme", team: "infra"}; "*" -> {}. */
    function scopeSubject(scope) {
        const s = {};
        if (!scope || scope === '*') return s;
        for (const part of scope.split('/')) {
            const i = part.indexOf(':');
            if (i > 0) s[part.slice(0, i)] = part.slice(i + 1);
        }
        return s;
    }

    function subjectText(s) {
        return ['org', 'team', 'user', 'key'].filter((k) => s && s[k]).map((k) => k + ':' + s[k]).join('/');
    }

    function fillSelect(sel, values, labels) {
        clear(sel);
        values.forEach((v, i) => {
            const o = node('option', labels ? labels[i] : v);
            o.value = v;
            sel.appendChild(o);
        });
    }

    /* --- sign in ------------------------------------------------------------------ */

    /* A #key=dsk_... fragment fills the token field and leaves the address bar at once,
     * so it stays out of the history and of anything shared from the page. */
    function takeFragmentKey() {
        const m = /^#key=([^&]*)/.exec(window.location.hash);
        if (!m) return '';
        history.replaceState(null, '', window.location.pathname + window.location.search);
        try {
            return decodeURIComponent(m[1]);
        } catch (e) {
            return '';
        }
    }

    async function signIn(token) {
        showError('signin-error', '');
        let who;
        try {
            who = await api.call('auth', { token: token }, token);
        } catch (e) {
            api.clearToken(); /* a revoked or expired key is not tried again on reload */
            showError('signin-error', e);
            return false;
        }
        api.setToken(token);
        me.role = who.role || (who.admin ? 'admin' : '');
        me.scope = who.scope || '*';
        me.keyId = who.key_id || '';
        $('who-key').textContent = me.keyId;
        $('who-role').textContent = me.role;
        $('who-scope').textContent = me.scope;
        $('whoami').hidden = false;
        $('signin').hidden = true;
        $('console').hidden = false;
        document.body.dataset.role = me.role;
        for (const e of document.querySelectorAll('.manage')) e.hidden = !canManage();
        await loadAll();
        return true;
    }

    function signOut() {
        api.clearToken();
        window.location.reload();
    }

    /* --- policy set -------------------------------------------------------------- */

    async function loadOverview() {
        showError('overview-error', '');
        try {
            const ping = await api.call('ping', {});
            $('server-version').textContent = ping.version;
        } catch (e) {
            showError('overview-error', e);
        }
        try {
            const st = await api.call('stats', {});
            $('policy-version').textContent = st.policy_version;
            /* A set goes live only after every *_test.lua of the folder passed (at start,
             * on policy.reload and on SIGHUP): the live version is a tested one. */
            $('policy-tests').textContent = st.policy_tests !== undefined
                ? String(st.policy_tests)
                : 'passed: the live set is one whose tests all passed when it was loaded';
            const d = st.decisions || {};
            $('decision-counts').textContent = 'allow ' + (d.allow || 0) + ', throttle ' +
                (d.throttle || 0) + ', refuse ' + (d.refuse || 0);
        } catch (e) {
            $('policy-version').textContent = 'not visible to this key';
            showError('overview-error', e);
        }
    }

    /* --- budgets ----------------------------------------------------------------- */

    function budgetRow(s) {
        const unit = UNITS[s.metric] || s.metric;
        const row = node('div', null, 'budget');
        row.dataset.selector = s.selector;
        row.dataset.metric = s.metric;
        const head = node('div', null, 'budget-head');
        head.appendChild(node('strong', s.counter));
        head.appendChild(node('span', ' ' + s.metric + ' per ' + s.window + ' (' + s.selector + ')'));
        row.appendChild(head);
        row.appendChild(charts.budgetBar(s, unit));
        row.appendChild(node('div', 'used ' + charts.fmt(s.used) + ' · held ' + charts.fmt(s.held) +
            ' · limit ' + charts.fmt(s.limit) + ' ' + unit + ' · remaining ' + charts.fmt(s.remaining) +
            ' · resets ' + isoTime(s.resets_at) + ' UTC', 'budget-text'));
        return row;
    }

    /* The subjects whose budgets to show: the key's own scope, and the teams that
     * recent decisions came from (bounded), or the one subject the operator asked for. */
    function budgetSubjects(asked) {
        if (asked) return [asked];
        const out = [], seen = new Set();
        const add = (s) => {
            const k = subjectText(s);
            if (k && !seen.has(k) && out.length < BUDGET_SUBJECTS) {
                seen.add(k);
                out.push(s);
            }
        };
        add(scopeSubject(me.scope));
        for (const d of me.decisions.slice().reverse())
            if (d.subject && d.subject.team) add({ org: d.subject.org, team: d.subject.team });
        return out;
    }

    async function loadBudgetStates(asked) {
        showError('budgets-error', '');
        const box = clear($('budget-bars'));
        delete box.dataset.subjects;
        const seen = new Set();
        const subjects = budgetSubjects(asked);
        for (const subject of subjects) {
            let r;
            try {
                r = await api.call('budget.get', { subject: subject });
            } catch (e) {
                showError('budgets-error', e);
                continue;
            }
            for (const s of r.budgets || []) {
                const k = s.counter + '|' + s.metric + '|' + s.window;
                if (seen.has(k)) continue;
                seen.add(k);
                box.appendChild(budgetRow(s));
            }
        }
        box.dataset.subjects = subjects.map(subjectText).join(' ');
        if (!box.firstChild)
            box.appendChild(node('p', subjects.length ? 'No budget applies to these subjects yet.'
                : 'Name a subject above to see its budgets.', 'help'));
    }

    function defRow(b) {
        const tr = node('tr');
        tr.appendChild(node('td', b.selector));
        tr.appendChild(node('td', b.metric));
        tr.appendChild(node('td', b.window));
        tr.appendChild(node('td', charts.fmt(b.limit) + ' ' + (b.unit || UNITS[b.metric] || '')));
        const td = node('td', null, 'manage');
        td.hidden = !canManage();
        const edit = node('button', 'Edit');
        edit.type = 'button';
        edit.setAttribute('aria-label', 'Edit ' + b.selector + ' ' + b.metric + ' ' + b.window);
        edit.addEventListener('click', () => {
            $('bf-selector').value = b.selector;
            $('bf-metric').value = b.metric;
            $('bf-window').value = b.window;
            $('bf-limit').value = b.limit;
            $('bf-limit').focus();
        });
        const del = node('button', 'Delete', 'danger');
        del.type = 'button';
        del.setAttribute('aria-label', 'Delete ' + b.selector + ' ' + b.metric + ' ' + b.window);
        del.addEventListener('click', () => deleteBudget(b));
        td.appendChild(edit);
        td.appendChild(del);
        tr.appendChild(td);
        return tr;
    }

    async function loadBudgetDefs() {
        const body = clear($('budget-defs').tBodies[0]);
        try {
            const r = await api.call('budget.list', {});
            for (const b of r.budgets || []) body.appendChild(defRow(b));
        } catch (e) {
            const tr = node('tr');
            const td = node('td', 'Definitions not visible to this key (' + e + ')');
            td.colSpan = 5;
            tr.appendChild(td);
            body.appendChild(tr);
        }
    }

    async function loadBudgets() {
        await loadBudgetDefs();
        await loadBudgetStates(null);
    }

    function budgetStatus(text, ok) {
        const p = $('budget-form-status');
        p.textContent = text;
        p.className = ok ? 'status ok' : 'status error';
    }

    async function saveBudget(ev) {
        ev.preventDefault();
        const limit = Number($('bf-limit').value);
        const params = { selector: $('bf-selector').value.trim(), metric: $('bf-metric').value,
            window: $('bf-window').value.trim(), limit: limit };
        try {
            const r = await api.call('budget.set', params);
            budgetStatus((r.created ? 'Created ' : 'Changed ') + r.budget.selector + ' ' +
                r.budget.metric + ' ' + r.budget.window + ': limit ' + charts.fmt(r.budget.limit), true);
            await loadBudgets();
        } catch (e) {
            budgetStatus('Refused by discernd: ' + e, false);
        }
    }

    async function deleteBudget(b) {
        try {
            await api.call('budget.delete', { selector: b.selector, metric: b.metric, window: b.window });
            budgetStatus('Deleted ' + b.selector + ' ' + b.metric + ' ' + b.window, true);
            await loadBudgets();
        } catch (e) {
            budgetStatus('Refused by discernd: ' + e, false);
        }
    }

    function lookupBudgets(ev) {
        ev.preventDefault();
        const s = {};
        for (const k of ['org', 'team', 'user']) {
            const v = $('lookup-' + k).value.trim();
            if (v) s[k] = v;
        }
        loadBudgetStates(Object.keys(s).length ? s : null);
    }

    /* --- usage ------------------------------------------------------------------- */

    function reportRows(r) {
        return r.rows || r.report || [];
    }

    /* Rows {period_start, group, value} -> one series per group, every step of the
     * range present (a step with no usage is 0, not a gap joined across). */
    function toSeries(rows, from, to, step) {
        const groups = new Map();
        for (const row of rows) {
            const g = String(row.group === '' || row.group == null ? '(none)' : row.group);
            if (!groups.has(g)) groups.set(g, new Map());
            const t = Math.floor(Number(row.period_start) / step) * step;
            const m = groups.get(g);
            m.set(t, (m.get(t) || 0) + Number(row.value));
        }
        const series = [];
        for (const [name, m] of groups) {
            const points = [];
            for (let t = from; t <= to; t += step) points.push([t, m.get(t) || 0]);
            series.push({ name: name, points: points, total: points.reduce((a, p) => a + p[1], 0) });
        }
        series.sort((a, b) => b.total - a.total);
        return shortNames(series.slice(0, 10));
    }

    /* Groups come as "org:acme/team:infra": drop the parts every series shares, so the
     * legend says what differs. */
    function shortNames(series) {
        const split = series.map((s) => s.name.split('/'));
        let common = 0;
        while (series.length > 1 && split.every((p) => p.length > common + 1 && p[common] === split[0][common]))
            common++;
        series.forEach((s, i) => { s.label = split[i].slice(common).join('/'); });
        return series;
    }

    /* The chart's numbers as text, for screen readers and for copying. */
    function totalsTable(series, unit, by) {
        const det = node('details');
        det.appendChild(node('summary', 'Totals per ' + by));
        const t = node('table', null, 'totals');
        const head = node('tr');
        head.appendChild(node('th', by)).scope = 'col';
        head.appendChild(node('th', '30 days, ' + unit)).scope = 'col';
        t.appendChild(node('thead')).appendChild(head);
        const body = t.appendChild(node('tbody'));
        for (const s of series) {
            const tr = body.appendChild(node('tr'));
            tr.appendChild(node('td', s.name));
            tr.appendChild(node('td', charts.fmt(s.total)));
        }
        det.appendChild(t);
        return det;
    }

    async function loadUsage(ev) {
        if (ev) ev.preventDefault();
        showError('usage-error', '');
        const box = clear($('usage-chart'));
        const metric = $('usage-metric').value, period = $('usage-period').value, by = $('usage-by').value;
        const step = period === 'hour' ? 3600 : DAY;
        const now = Math.floor(Date.now() / 1000);
        const to = Math.floor(now / step) * step, from = Math.floor((now - 30 * DAY) / step) * step;
        try {
            const r = await api.call('report', { by: by, period: period, metric: metric,
                since: from, until: now + 1 });
            const series = toSeries(reportRows(r), from, to, step);
            if (r.truncated)
                box.appendChild(node('p', 'The report was cut at its row limit: the chart is partial.', 'error'));
            if (!series.length) {
                box.appendChild(node('p', 'No usage in the last 30 days.', 'help'));
                return;
            }
            box.appendChild(charts.lineChart(series, { unit: r.unit || UNITS[metric] || metric, from: from,
                to: to, step: step, title: metric + ' per ' + by + ', ' + (period === 'hour'
                    ? 'hourly' : 'daily') + ', last 30 days' }));
            box.appendChild(totalsTable(series, r.unit || UNITS[metric] || metric, by));
        } catch (e) {
            showError('usage-error', e);
        }
    }

    /* --- decisions --------------------------------------------------------------- */

    /* decisions.list pages oldest first: walk at most FEED_PAGES pages of the last 30
     * days and keep the newest rows that pass the client-side filters. */
    async function fetchDecisions(f) {
        const params = { since: Math.floor(Date.now() / 1000) - 30 * DAY, limit: 1000 };
        if (f.outcome) params.outcome = f.outcome;
        if (f.team) params.subject = { team: f.team };
        let out = [];
        for (let page = 0; page < FEED_PAGES; page++) {
            const r = await api.call('decisions.list', params);
            for (const d of r.decisions || []) {
                if (f.purpose && d.purpose !== f.purpose && d.purpose_class !== f.purpose) continue;
                if (f.model && d.model !== f.model) continue;
                out.push(d);
            }
            if (out.length > FEED_ROWS) out = out.slice(out.length - FEED_ROWS);
            if (r.next === null || r.next === undefined) break;
            params.after = r.next;
        }
        return out;
    }

    function verdictList(d) {
        const ul = node('ul', null, 'verdicts');
        for (const v of d.verdicts || []) {
            const li = node('li', null, v.shadow ? 'shadow' : '');
            li.appendChild(node('strong', v.policy));
            li.appendChild(node('span', ' ' + v.outcome, 'outcome-' + v.outcome));
            if (v.shadow) li.appendChild(node('span', ' shadow', 'tag'));
            if (v.reason) li.appendChild(node('span', ': ' + v.reason));
            ul.appendChild(li);
        }
        return ul;
    }

    function decisionRow(d) {
        const tr = node('tr');
        tr.appendChild(node('td', isoTime(d.at), 'when'));
        tr.appendChild(node('td', subjectText(d.subject)));
        tr.appendChild(node('td', d.purpose));
        tr.appendChild(node('td', d.provider + '/' + d.model));
        tr.appendChild(node('td', d.outcome, 'outcome outcome-' + d.outcome));
        const td = node('td');
        td.appendChild(node('div', d.reason + (d.policy ? ' (' + d.policy + ')' : '')));
        if ((d.verdicts || []).length) {
            const det = node('details');
            det.appendChild(node('summary', d.verdicts.length + ' verdict' +
                (d.verdicts.length === 1 ? '' : 's')));
            det.appendChild(verdictList(d));
            td.appendChild(det);
        }
        tr.appendChild(td);
        return tr;
    }

    function decisionFilters() {
        return { team: $('df-team').value.trim(), outcome: $('df-outcome').value,
            purpose: $('df-purpose').value.trim(), model: $('df-model').value.trim() };
    }

    async function loadDecisions(ev) {
        if (ev) ev.preventDefault();
        showError('decisions-error', '');
        $('decisions-summary').textContent = '';
        const body = clear($('decision-table').tBodies[0]);
        const f = decisionFilters();
        let rows;
        try {
            rows = await fetchDecisions(f);
        } catch (e) {
            showError('decisions-error', e);
            $('decisions-summary').textContent = '';
            return;
        }
        if (!f.team && !f.outcome && !f.purpose && !f.model) me.decisions = rows;
        for (const d of rows.slice().reverse()) body.appendChild(decisionRow(d));
        $('decisions-summary').textContent = rows.length + ' decision' + (rows.length === 1 ? '' : 's') +
            ' shown (newest first, last 30 days, at most ' + FEED_ROWS + ').';
    }

    /* --- estimate ---------------------------------------------------------------- */

    async function loadModels() {
        try {
            const r = await api.call('models.list', {});
            const models = r.models || [];
            const providers = [...new Set(models.map((m) => m.provider))];
            fillSelect($('ef-provider'), providers);
            if (providers.includes('openai')) $('ef-provider').value = 'openai';
            const fillModels = () => {
                const list = clear($('ef-models'));
                for (const m of models)
                    if (m.provider === $('ef-provider').value) {
                        const o = document.createElement('option');
                        o.value = m.model;
                        list.appendChild(o);
                    }
            };
            $('ef-provider').addEventListener('change', fillModels);
            fillModels();
        } catch (e) {
            showError('estimate-error', e);
        }
    }

    function rangeText(r, unit) {
        if (!r) return '–';
        return charts.fmt(r.min) + ' – ' + charts.fmt(r.max) + ' ' + unit;
    }

    async function estimateBoth(ev) {
        if (ev) ev.preventDefault();
        showError('estimate-error', '');
        const base = { provider: $('ef-provider').value, model: $('ef-model').value.trim(),
            input_tokens: Math.max(0, Math.floor(Number($('ef-in').value) || 0)),
            output_tokens: Math.max(0, Math.floor(Number($('ef-out').value) || 0)) };
        const zone = $('ef-zone').value.trim();
        if (zone) base.zone = zone;
        const results = await Promise.all(['ecologits', 'discern'].map((m) =>
            api.call('estimate', Object.assign({ method: m }, base)).catch((e) => ({ error: e }))));
        const body = clear($('estimate-table').tBodies[0]);
        for (const [key, label, unit] of IMPACTS) {
            const tr = node('tr');
            tr.appendChild(node('th', label)).scope = 'row';
            for (const r of results)
                tr.appendChild(node('td', r.error ? '–' : rangeText(r.estimate[key], unit)));
            body.appendChild(tr);
        }
        const extra = [['Zone', (r) => r.zone], ['Warnings', (r) => (r.warnings || []).join(', ') || 'none']];
        for (const [label, f] of extra) {
            const tr = node('tr');
            tr.appendChild(node('th', label)).scope = 'row';
            for (const r of results) tr.appendChild(node('td', r.error ? String(r.error) : f(r)));
            body.appendChild(tr);
        }
        const errs = results.filter((r) => r.error).map((r) => String(r.error));
        showError('estimate-error', errs.join('; '));
    }

    /* --- wiring ------------------------------------------------------------------ */

    async function loadAll() {
        await loadOverview();
        await loadDecisions();
        await loadBudgets();
        await loadUsage();
        await loadModels();
        await estimateBoth();
        document.body.dataset.loaded = 'true';
    }

    function init() {
        fillSelect($('bf-metric'), METRICS);
        fillSelect($('usage-metric'), METRICS);
        $('signin-form').addEventListener('submit', (ev) => {
            ev.preventDefault();
            signIn($('signin-token').value.trim());
        });
        $('sign-out').addEventListener('click', signOut);
        $('budget-form').addEventListener('submit', saveBudget);
        $('budget-lookup').addEventListener('submit', lookupBudgets);
        $('usage-form').addEventListener('submit', loadUsage);
        $('decision-filters').addEventListener('submit', loadDecisions);
        $('estimate-form').addEventListener('submit', estimateBoth);
        const fragment = takeFragmentKey();
        const token = fragment || api.token();
        if (token) {
            $('signin-token').value = token;
            signIn(token);
        } else {
            $('signin-token').focus();
        }
    }

    document.addEventListener('DOMContentLoaded', init);
})();
