/*
 * charts.js - the console's SVG, built with DOM calls (no library, no markup
 * strings): every label goes in through textContent, so server strings cannot
 * become markup.
 *
 *   DiscernCharts.budgetBar(state, unit) -> <svg> bar of used / held / limit
 *   DiscernCharts.lineChart(series, opts) -> <svg> one line per series over time;
 *       series = [{name, points: [[t_seconds, value], ...]}], opts = {unit, from, to, step}
 *   DiscernCharts.color(i)               -> the i-th series colour
 */
'use strict';

(function () {
    const NS = 'http://www.w3.org/2000/svg';
    /* Colours that keep 3:1 against white and stay apart for the common colour blindnesses. */
    const PALETTE = ['#0b62a4', '#c2410c', '#15803d', '#7c3aed', '#b91c1c', '#0e7490', '#a16207',
        '#be185d', '#4b5563', '#1d4ed8'];

    function el(name, attrs, text) {
        const e = document.createElementNS(NS, name);
        for (const k in attrs || {}) e.setAttribute(k, String(attrs[k]));
        if (text !== undefined) e.textContent = text;
        return e;
    }

    function color(i) {
        return PALETTE[i % PALETTE.length];
    }

    function fmt(v) {
        if (!isFinite(v)) return '–';
        const a = Math.abs(v);
        if (a !== 0 && (a < 0.01 || a >= 1e6)) return v.toExponential(2);
        return Number(v.toPrecision(4)).toLocaleString('en');
    }

    function budgetBar(s, unit) {
        const W = 400, H = 22;
        const limit = Number(s.limit) || 0;
        const used = Math.max(0, Number(s.used) || 0), held = Math.max(0, Number(s.held) || 0);
        const scale = limit > 0 ? W / Math.max(limit, used + held) : 0;
        const label = s.counter + ' ' + s.metric + ' ' + s.window + ': used ' + fmt(used) +
            ', held ' + fmt(held) + ' of ' + fmt(limit) + ' ' + unit;
        const svg = el('svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none',
            role: 'img', 'aria-label': label, class: 'bar' });
        svg.appendChild(el('title', {}, label));
        svg.appendChild(el('rect', { x: 0, y: 0, width: W, height: H, class: 'bar-limit' }));
        const uw = Math.min(W, used * scale), hw = Math.min(W - uw, held * scale);
        const over = limit > 0 && used + held >= limit;
        svg.appendChild(el('rect', { x: 0, y: 0, width: uw, height: H,
            class: over ? 'bar-used bar-over' : 'bar-used' }));
        svg.appendChild(el('rect', { x: uw, y: 0, width: hw, height: H, class: 'bar-held' }));
        return svg;
    }

    function niceMax(v) {
        if (!(v > 0)) return 1;
        const p = Math.pow(10, Math.floor(Math.log10(v)));
        for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
        return 10 * p;
    }

    function dateLabel(t, step) {
        const d = new Date(t * 1000).toISOString();
        return step < 86400 ? d.slice(5, 13).replace('T', ' ') + 'h' : d.slice(5, 10);
    }

    function axes(svg, box, ymax, opts) {
        for (let i = 0; i <= 4; i++) {
            const y = box.y + box.h - (box.h * i) / 4;
            svg.appendChild(el('line', { x1: box.x, x2: box.x + box.w, y1: y, y2: y, class: 'grid' }));
            svg.appendChild(el('text', { x: box.x - 6, y: y + 4, 'text-anchor': 'end', class: 'tick' },
                fmt((ymax * i) / 4)));
        }
        const span = opts.to - opts.from;
        for (let i = 0; i <= 5; i++) {
            const t = opts.from + (span * i) / 5;
            const x = box.x + (box.w * i) / 5;
            svg.appendChild(el('text', { x: x, y: box.y + box.h + 16, 'text-anchor': 'middle',
                class: 'tick' }, dateLabel(t, opts.step)));
        }
        svg.appendChild(el('text', { x: box.x, y: box.y - 8, class: 'unit' }, opts.unit));
    }

    function lineChart(series, opts) {
        const W = 760, H = 280;
        const box = { x: 64, y: 24, w: W - 64 - 150, h: H - 24 - 32 };
        let ymax = 0;
        for (const s of series) for (const p of s.points) ymax = Math.max(ymax, p[1]);
        ymax = niceMax(ymax);
        const span = Math.max(1, opts.to - opts.from);
        const sx = (t) => box.x + ((t - opts.from) / span) * box.w;
        const sy = (v) => box.y + box.h - (v / ymax) * box.h;
        const svg = el('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', class: 'line-chart',
            'aria-label': opts.title || 'usage over time' });
        svg.appendChild(el('title', {}, opts.title || 'usage over time'));
        axes(svg, box, ymax, opts);
        series.forEach((s, i) => {
            const pts = s.points.map((p) => sx(p[0]).toFixed(1) + ',' + sy(p[1]).toFixed(1));
            const line = el('polyline', { points: pts.join(' '), fill: 'none', stroke: color(i),
                'stroke-width': 2, class: 'series' });
            line.appendChild(el('title', {}, s.name));
            svg.appendChild(line);
            for (const p of s.points) {
                const dot = el('circle', { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color(i) });
                dot.appendChild(el('title', {}, s.name + ' ' + dateLabel(p[0], opts.step) + ': ' +
                    fmt(p[1]) + ' ' + opts.unit));
                svg.appendChild(dot);
            }
            const ly = box.y + 14 + i * 18;
            svg.appendChild(el('rect', { x: box.x + box.w + 16, y: ly - 9, width: 12, height: 12,
                fill: color(i) }));
            const label = s.label || s.name;
            const text = el('text', { x: box.x + box.w + 34, y: ly + 1, class: 'legend' },
                label.length > 20 ? label.slice(0, 19) + '…' : label);
            text.appendChild(el('title', {}, s.name));
            svg.appendChild(text);
        });
        return svg;
    }

    window.DiscernCharts = { budgetBar, lineChart, color, fmt };
})();
