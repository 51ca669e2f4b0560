/*
 * test_dashboard.js - the operator console in a real browser: Debian's chromium,
 * headless, driven by playwright-core (pinned in package-lock.json; no browser is
 * downloaded). It starts its own discernd (ephemeral loopback ports, a temporary
 * store, the shipped policies plus one shadow policy), creates keys and traffic
 * through the HTTP API with the admin token, then signs in as a manager and as a
 * reader and checks what each sees and may do. Screenshots go to the artifact folder.
 *
 *   node test_dashboard.js --discernd PATH --source DIR --artifacts DIR
 *   DISCERN_CHROMIUM=/path/to/chromium overrides the browser (default /usr/bin/chromium);
 *   DISCERN_UPDATE_SCREENSHOT=1 also writes docs/dashboard.png from the manager's view.
 *
 * Every process it starts (discernd, chromium) is stopped by its pid.
 */
'use strict';

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function args() {
    const out = {};
    const a = process.argv.slice(2);
    for (let i = 0; i + 1 < a.length; i += 2) out[a[i].replace(/^--/, '')] = a[i + 1];
    for (const k of ['discernd', 'source', 'artifacts'])
        if (!out[k]) throw new Error('usage: test_dashboard.js --discernd PATH --source DIR --artifacts DIR');
    return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* --- discernd ------------------------------------------------------------------- */

function writeConfig(dir, source, adminToken) {
    const policies = path.join(dir, 'policies');
    fs.cpSync(path.join(source, 'policies'), policies, { recursive: true });
    fs.copyFileSync(path.join(__dirname, 'fixtures', 'shadow_watch.lua'),
        path.join(policies, 'shadow_watch.lua'));
    const conf = [
        'listen = "127.0.0.1:0"', 'http = "127.0.0.1:0"',
        `unix = "${path.join(dir, 'd.sock')}"`, `port_file = "${path.join(dir, 'ports')}"`,
        `store = "${path.join(dir, 'discern.db')}"`, `admin_token = "${adminToken}"`,
        'unix_admin_uids = "none"', 'workers = 2',
        `data = "${path.join(source, 'core', 'data')}"`, `policies = "${policies}"`, '',
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'discernd.conf'), conf);
    return path.join(dir, 'discernd.conf');
}

async function startDiscernd(bin, dir, conf) {
    const log = fs.openSync(path.join(dir, 'discernd.log'), 'a');
    const child = spawn(bin, ['--config', conf], { stdio: ['ignore', log, log] });
    let exited = null;
    child.on('exit', (code, sig) => { exited = code === null ? sig : code; });
    const portFile = path.join(dir, 'ports');
    for (const deadline = Date.now() + 15000; Date.now() < deadline; await sleep(20)) {
        if (exited !== null) break;
        if (!fs.existsSync(portFile)) continue;
        const ports = fs.readFileSync(portFile, 'utf8').trim().split(/\s+/).map(Number);
        if (ports.length === 2 && ports[1] > 0) return { child, rpc: ports[0], http: ports[1] };
    }
    process.stderr.write(fs.readFileSync(path.join(dir, 'discernd.log'), 'utf8'));
    child.kill('SIGKILL');
    throw new Error('discernd did not start (exit ' + exited + '); its log is above');
}

/* SIGTERM, SIGKILL after 5 s; the exit code (or the signal's name). */
async function stopByPid(child, name) {
    if (!child) return null;
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode;
    const done = new Promise((r) => child.once('exit', (code, sig) => r(code === null ? sig : code)));
    process.kill(child.pid, 'SIGTERM');
    const t = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch (e) { /* gone */ } }, 5000);
    const status = await done;
    clearTimeout(t);
    console.log(`stopped ${name} (pid ${child.pid}): ${status}`);
    return status;
}

/* --- the JSON API, as the test's own client -------------------------------------- */

function apiClient(base) {
    return async function call(method, params, token) {
        const res = await fetch(`${base}/v1/${method}`, {
            method: 'POST',
            headers: Object.assign({ 'Content-Type': 'application/json' },
                token ? { Authorization: `Bearer ${token}` } : {}),
            body: JSON.stringify(params || {}),
        });
        const body = await res.json();
        return { status: res.status, result: body.result, error: body.error };
    };
}

async function ok(call, method, params, token) {
    const r = await call(method, params, token);
    assert.ok(!r.error, `${method}: ${JSON.stringify(r.error)}`);
    return r.result;
}

/* A purpose that would run script if the page put server strings in as markup. */
const HOSTILE_PURPOSE = '<img src=x onerror="window.pwned=1">';

/* Keys for the console, budgets, and real decisions: two teams of org acme settle
 * checks of several purposes, and one check is refused by a budget. */
async function seed(call, admin) {
    const key = async (role, scope) => (await ok(call, 'key.create', { role, scope, label: role }, admin)).token;
    const keys = {
        manager: await key('manager', 'org:acme'),
        reader: await key('reader', 'org:acme'),
        infra: await key('client', 'org:acme/team:infra'),
        web: await key('client', 'org:acme/team:web'),
    };
    await ok(call, 'budget.set', { selector: 'org:acme/team:*', metric: 'gco2e', window: 'month', limit: 50 }, admin);
    await ok(call, 'budget.set', { selector: 'org:acme', metric: 'requests', window: 'day', limit: 1000 }, admin);
    await ok(call, 'budget.set', { selector: 'org:acme/team:web', metric: 'energy_wh', window: 'day', limit: 20 }, admin);
    const traffic = [
        ['infra', 'ana', 'code-review', 'gpt-4o', 1200, 800],
        ['infra', 'ana', 'translation', 'gpt-4o-mini', 400, 300],
        ['infra', 'bo', 'analysis', 'gpt-4o', 3000, 1500],
        ['web', 'cy', 'marketing copy', 'gpt-4o', 800, 600],
        ['web', 'cy', 'support', 'gpt-4o-mini', 500, 200],
        ['web', 'di', 'documentation', 'gpt-4o', 2000, 900],
        ['web', 'di', HOSTILE_PURPOSE, 'gpt-4o-mini', 100, 100],
    ];
    for (const [team, user, purpose, model, inT, outT] of traffic) {
        const c = await ok(call, 'check', { subject: { user }, provider: 'openai', model, purpose,
            input_tokens: inT, output_tokens: outT }, keys[team]);
        if (c.reservation)
            await ok(call, 'settle', { reservation: c.reservation, input_tokens: inT,
                output_tokens: Math.floor(outT * 0.7) }, keys[team]);
    }
    const big = await ok(call, 'check', { subject: { user: 'di' }, provider: 'openai', model: 'gpt-4o',
        purpose: 'documentation', input_tokens: 100000, output_tokens: 100000 }, keys.web);
    assert.equal(big.decision, 'refuse', 'the over-budget check of team web is refused');
    return keys;
}

/* --- the browser ---------------------------------------------------------------- */

function chromiumPath() {
    const p = process.env.DISCERN_CHROMIUM || '/usr/bin/chromium';
    if (!fs.existsSync(p))
        throw new Error(`chromium not found at ${p}: install Debian's chromium (scripts/test.sh does) ` +
            'or set DISCERN_CHROMIUM');
    return p;
}

function watchPage(page, problems) {
    page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console: ${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
}

async function signInByFragment(context, base, token, problems) {
    const page = await context.newPage();
    watchPage(page, problems);
    await page.goto(`${base}/#key=${token}`);
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20000 });
    assert.equal(new URL(page.url()).hash, '', 'the #key= fragment is removed from the address bar');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('discern.token')), token,
        'the token is kept in sessionStorage');
    return page;
}

/* WCAG 2 contrast of every visible text against the first opaque background behind it,
 * and a label for every form control. */
async function checkAccessible(page) {
    const bad = await page.evaluate(() => {
        const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
        const lum = ([r, g, b]) => [r, g, b].map((v) => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
        }).reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
        const background = (e) => {
            for (; e; e = e.parentElement) {
                const c = rgb(getComputedStyle(e).backgroundColor);
                if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
            }
            return [255, 255, 255];
        };
        const out = [];
        for (const e of document.querySelectorAll('body *')) {
            if (!e.offsetParent && e.tagName !== 'BODY') continue;
            if (e instanceof SVGElement) continue;
            const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
            if (!own) continue;
            const st = getComputedStyle(e);
            const a = lum(rgb(st.color)), b = lum(background(e));
            const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            const large = parseFloat(st.fontSize) >= 24 || (parseFloat(st.fontSize) >= 18.66 && Number(st.fontWeight) >= 700);
            if (ratio < (large ? 3 : 4.5)) out.push(`${e.tagName}#${e.id} "${e.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
        }
        for (const c of document.querySelectorAll('input, select, button')) {
            if (!c.offsetParent) continue;
            const named = c.tagName === 'BUTTON' ? (c.textContent.trim() || c.getAttribute('aria-label')) : c.labels.length;
            if (!named) out.push(`${c.tagName}#${c.id} has no label`);
        }
        return out;
    });
    assert.deepEqual(bad, [], 'readable contrast and labelled controls');
}

async function checkManager(page, call, admin, artifacts) {
    await page.screenshot({ path: path.join(artifacts, 'dashboard-manager.png'), fullPage: true });
    assert.equal(await page.textContent('#who-role'), 'manager');
    assert.equal(await page.textContent('#who-scope'), 'org:acme');
    assert.notEqual((await page.textContent('#policy-version')).trim(), '–', 'the policy version is shown');

    const bars = await page.$$eval('#budget-bars .budget', (els) => els.map((e) => ({
        selector: e.dataset.selector, metric: e.dataset.metric,
        used: Number(e.querySelector('rect.bar-used').getAttribute('width')),
        text: e.textContent })));
    assert.ok(bars.some((b) => b.selector === 'org:acme/team:*' && b.used > 0),
        'a team gco2e bar shows usage: ' + JSON.stringify(bars));
    assert.ok(bars.some((b) => b.metric === 'requests'), 'the org requests budget is shown');
    assert.ok(bars.every((b) => /resets \d{4}-\d\d-\d\d/.test(b.text)), 'every bar says when it resets');

    const lines = await page.$$eval('#usage-chart svg polyline.series', (els) =>
        els.map((e) => e.getAttribute('points').split(' ').length));
    assert.ok(lines.length >= 2, `a line per team in the usage chart (got ${lines.length})`);
    assert.ok(lines.every((n) => n >= 30), 'each line spans the 30 days');
    const legend = await page.$$eval('#usage-chart text.legend', (els) => els.map((e) => e.textContent));
    assert.ok(legend.some((t) => /infra/.test(t)) && legend.some((t) => /web/.test(t)),
        'the legend names the teams: ' + legend);

    const rows = await page.$$eval('#decision-table tbody tr', (els) => els.length);
    assert.ok(rows >= 8, `the decision feed lists the checks (got ${rows})`);
    assert.ok(await page.$('#decision-table .verdicts li.shadow .tag'), 'a shadow verdict is marked');
    const cells = await page.$$eval('#decision-table tbody td', (els) => els.map((e) => e.textContent));
    assert.ok(cells.includes(HOSTILE_PURPOSE), 'a purpose holding markup is shown as text');
    assert.equal(await page.$('#decision-table img'), null, 'and never becomes an element');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    await page.selectOption('#df-outcome', 'refuse');
    await page.click('#decision-filters button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('#decision-table tbody tr').length === 1);
    assert.match(await page.textContent('#decision-table tbody tr'), /would be exceeded/);

    const est = await page.$$eval('#estimate-table tbody tr:first-child td', (els) => els.map((e) => e.textContent));
    assert.equal(est.length, 2, 'ecologits and discern side by side');
    assert.ok(est.every((t) => /kWh/.test(t)), 'both methods give an energy range: ' + est);

    /* Change the team budget from the console; the server has it afterwards. */
    assert.ok(await page.isVisible('#budget-form'), 'a manager sees the budget form');
    await page.click('#budget-defs button[aria-label="Edit org:acme/team:* gco2e month"]');
    assert.equal(await page.inputValue('#bf-limit'), '50');
    await page.fill('#bf-limit', '75');
    await page.click('#budget-form button[type=submit]');
    await page.waitForSelector('#budget-form-status.ok');
    assert.match(await page.textContent('#budget-form-status'), /Changed org:acme\/team:\* gco2e month: limit 75/);
    const defs = (await ok(call, 'budget.list', { selector: 'org:acme/team:*' }, admin)).budgets;
    assert.equal(defs.find((b) => b.metric === 'gco2e').limit, 75, 'the server has the new limit');
    await page.waitForFunction(() => [...document.querySelectorAll('#budget-defs tbody td')]
        .some((td) => td.textContent.startsWith('75 ')));

    /* A selector outside the manager's scope: the page shows the server's forbidden. */
    await page.fill('#bf-selector', 'team:*');
    await page.fill('#bf-limit', '1');
    await page.click('#budget-form button[type=submit]');
    await page.waitForSelector('#budget-form-status.error');
    assert.match(await page.textContent('#budget-form-status'), /^Refused by discernd: forbidden: /);
    assert.ok(!(await ok(call, 'budget.list', {}, admin)).budgets.some((b) => b.selector === 'team:*'),
        'nothing was set');

    /* Delete one: gone from the page and from the server. */
    await page.click('#budget-defs button[aria-label="Delete org:acme/team:web energy_wh day"]');
    await page.waitForFunction(() => /Deleted org:acme\/team:web energy_wh day/.test(
        document.getElementById('budget-form-status').textContent));
    assert.equal(await page.$('#budget-defs button[aria-label="Delete org:acme/team:web energy_wh day"]'), null);
    const left = (await ok(call, 'budget.list', {}, admin)).budgets;
    assert.ok(!left.some((b) => b.metric === 'energy_wh'), 'the server deleted the budget');
}

/* The filters, the subject lookup, the hourly chart and the calculator's two methods. */
async function checkControls(page) {
    const feed = async (fill) => {
        for (const [id, v] of Object.entries(fill)) await page.fill(id, v);
        await page.selectOption('#df-outcome', '');
        await page.click('#decision-filters button[type=submit]');
        await page.waitForFunction(() => /decisions? shown/.test(document.getElementById('decisions-summary').textContent));
        return page.$$eval('#decision-table tbody tr', (els) => els.map((e) => e.textContent));
    };
    let rows = await feed({ '#df-team': 'infra', '#df-purpose': '', '#df-model': '' });
    assert.equal(rows.length, 3, 'team filter: the three infra checks');
    assert.ok(rows.every((t) => /team:infra/.test(t)));
    rows = await feed({ '#df-team': '', '#df-purpose': 'support', '#df-model': '' });
    assert.equal(rows.length, 1, 'purpose filter');
    rows = await feed({ '#df-team': '', '#df-purpose': '', '#df-model': 'gpt-4o-mini' });
    assert.equal(rows.length, 3, 'model filter');
    assert.ok(rows.every((t) => /gpt-4o-mini/.test(t)));

    await page.fill('#lookup-team', 'infra');
    await page.click('#budget-lookup button[type=submit]');
    await page.waitForSelector('#budget-bars[data-subjects="team:infra"]');
    const counters = await page.$$eval('#budget-bars .budget strong', (els) => els.map((e) => e.textContent));
    assert.deepEqual(counters.sort(), ['org:acme', 'org:acme/team:infra'],
        'the bars of the subject asked for (the scope fills its org)');

    await page.selectOption('#usage-period', 'hour');
    await page.selectOption('#usage-metric', 'requests');
    await page.click('#usage-form button[type=submit]');
    await page.waitForFunction(() => {
        const l = document.querySelector('#usage-chart polyline.series');
        return l && l.getAttribute('points').split(' ').length >= 30 * 24;
    });
    assert.match(await page.textContent('#usage-chart svg > title'), /requests per team, hourly/);
    const totals = await page.$$eval('#usage-chart table.totals tbody tr', (els) => els.map((e) => e.textContent));
    assert.ok(totals.some((t) => /team:infra.*3$/.test(t)), 'infra settled three requests: ' + totals);

    /* An unlisted model: ecologits refuses it, discern estimates it from its class. */
    await page.fill('#ef-model', 'gpt-9');
    await page.press('#ef-model', 'Enter');
    await page.waitForFunction(() => /unknown_model/.test(document.getElementById('estimate-error').textContent));
    const energy = await page.$$eval('#estimate-table tbody tr:first-child td', (els) => els.map((e) => e.textContent));
    assert.equal(energy[0], '–', 'no ecologits number for an unlisted model');
    assert.match(energy[1], /kWh/, 'the discern method estimates it');
    assert.match(await page.textContent('#estimate-table'), /model-not-in-catalogue/);
}

async function checkReader(page, call, keys, admin, artifacts) {
    assert.equal(await page.textContent('#who-role'), 'reader');
    assert.ok(!(await page.isVisible('#budget-form')), 'a reader sees no budget form');
    assert.equal(await page.$$eval('#budget-defs button', (els) => els.filter((e) => e.offsetParent).length), 0,
        'a reader sees no edit or delete buttons');
    assert.ok((await page.$$('#budget-bars .budget')).length >= 2, 'a reader sees the budgets');
    await page.screenshot({ path: path.join(artifacts, 'dashboard-reader.png'), fullPage: true });

    /* Forced: unhide the form and submit; the page shows the server's refusal. */
    const direct = await call('budget.set', { selector: 'org:acme/team:*', metric: 'gco2e', window: 'month', limit: 1e9 },
        keys.reader);
    assert.ok(direct.error && [401, 403].includes(direct.status), 'the server refuses a reader: ' + JSON.stringify(direct));
    await page.evaluate(() => { document.getElementById('budget-form').hidden = false; });
    await page.fill('#bf-selector', 'org:acme/team:*');
    await page.selectOption('#bf-metric', 'gco2e');
    await page.fill('#bf-window', 'month');
    await page.fill('#bf-limit', '1000000000');
    await page.click('#budget-form button[type=submit]');
    await page.waitForSelector('#budget-form-status.error');
    const shown = await page.textContent('#budget-form-status');
    assert.ok(shown.includes(direct.error.code) && shown.includes(direct.error.message),
        `the page shows the server's ${direct.error.code}: ${shown}`);
    const defs = (await ok(call, 'budget.list', { selector: 'org:acme/team:*' }, admin)).budgets;
    assert.equal(defs.find((b) => b.metric === 'gco2e').limit, 75, 'the limit is unchanged');
    await page.screenshot({ path: path.join(artifacts, 'dashboard-reader-refused.png'), fullPage: true });

    await page.reload();
    await page.waitForSelector('body[data-loaded="true"]');
    assert.equal(await page.textContent('#who-role'), 'reader', 'a reload keeps the sign-in');
    await page.click('#sign-out');
    await page.waitForSelector('#signin-form', { state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('discern.token')), null, 'sign out forgets the key');
}

async function checkBadKey(context, base, problems) {
    const page = await context.newPage();
    watchPage(page, problems);
    await page.goto(base + '/');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'signin-token', 'the key field has focus');
    await page.keyboard.type('dsk_' + '0'.repeat(64));
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '');
    assert.match(await page.textContent('#signin-error'), /unauthorized/);
    assert.ok(await page.isHidden('#console'), 'nothing is shown without a valid key');
    await page.close();
}

async function checkHeaders(base) {
    const res = await fetch(base + '/');
    assert.equal(res.status, 200, 'discernd serves the console at /');
    const csp = res.headers.get('content-security-policy') || '';
    assert.match(csp, /script-src[^;]*'self'/, 'a Content-Security-Policy limits scripts: ' + csp);
    assert.doesNotMatch(csp, /unsafe-inline/, 'no inline script allowed');
}

async function main() {
    const a = args();
    const exe = chromiumPath();
    const { chromium } = require('playwright-core');
    fs.mkdirSync(a.artifacts, { recursive: true });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'discern-browser-'));
    const admin = crypto.randomBytes(24).toString('hex');
    let server = null, browserServer = null, browser = null, serverExit = null;
    const problems = [];
    try {
        server = await startDiscernd(a.discernd, dir, writeConfig(dir, a.source, admin));
        const base = `http://127.0.0.1:${server.http}`;
        console.log(`discernd pid ${server.child.pid}, HTTP ${base}`);
        await checkHeaders(base);
        const call = apiClient(base);
        const keys = await seed(call, admin);

        browserServer = await chromium.launchServer({ executablePath: exe, headless: true,
            args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
        console.log(`chromium pid ${browserServer.process().pid}`);
        browser = await chromium.connect(browserServer.wsEndpoint());
        const view = { viewport: { width: 1200, height: 900 } };

        const mctx = await browser.newContext(view);
        const mpage = await signInByFragment(mctx, base, keys.manager, problems);
        await checkAccessible(mpage);
        await checkManager(mpage, call, admin, a.artifacts);
        await checkControls(mpage);
        if (process.env.DISCERN_UPDATE_SCREENSHOT === '1') {
            await mpage.reload();
            await mpage.waitForSelector('body[data-loaded="true"]');
            /* From the top to the end of the usage chart: key, policy set, budgets, usage. */
            const bottom = await mpage.$eval('#usage', (e) => e.getBoundingClientRect().bottom + window.scrollY);
            await mpage.screenshot({ path: path.join(a.source, 'docs', 'dashboard.png'), fullPage: true,
                clip: { x: 0, y: 0, width: 1200, height: Math.ceil(bottom) + 16 } });
        }
        await mctx.close();

        const rctx = await browser.newContext(view);
        const rpage = await signInByFragment(rctx, base, keys.reader, problems);
        await checkReader(rpage, call, keys, admin, a.artifacts);
        await checkBadKey(rctx, base, problems);
        await rctx.close();
        /* The wrong key's auth, the refused budget.set calls and the ecologits estimate
         * of an unlisted model log their 401/403/404; anything else is a fault of the page. */
        const expected = /status of (401 .*\/v1\/auth|40[13] .*\/v1\/budget\.set|404 .*\/v1\/estimate)\)$/;
        const real = problems.filter((p) => !expected.test(p));
        assert.deepEqual(real, [], 'no script error or CSP violation in the page');
    } finally {
        if (browser) await browser.close().catch(() => {});
        if (browserServer) {
            const p = browserServer.process();
            await browserServer.close().catch(() => {});
            if (p && p.exitCode === null && p.signalCode === null) await stopByPid(p, 'chromium');
        }
        if (server) serverExit = await stopByPid(server.child, 'discernd');
        if (serverExit !== 0 && fs.existsSync(path.join(dir, 'discernd.log')))
            process.stderr.write(fs.readFileSync(path.join(dir, 'discernd.log'), 'utf8'));
        fs.rmSync(dir, { recursive: true, force: true });
    }
    /* Under the sanitizers a report makes discernd exit non-zero. */
    assert.equal(serverExit, 0, 'discernd stopped cleanly');
    console.log(`browser/test_dashboard: passed; screenshots in ${a.artifacts}`);
}

main().catch((e) => {
    console.error('browser/test_dashboard: FAILED: ' + (e && e.stack ? e.stack : e));
    process.exit(1);
});
