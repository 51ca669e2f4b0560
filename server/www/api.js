/*
 * api.js - the console's one way to talk to discernd: POST /v1/<method> with the
 * method's params as a JSON body and the key as a Bearer token; the reply is
 * {"result": ...} or {"error": {"code", "message"}}. The token lives in
 * sessionStorage (this tab only) and nowhere else.
 *
 *   DiscernApi.call(method, params) -> Promise of the result; rejects with an
 *                                      ApiError {code, message, status}
 *   DiscernApi.token() / setToken(t) / clearToken()
 */
'use strict';

(function () {
    const TOKEN_KEY = 'discern.token';

    class ApiError extends Error {
        constructor(code, message, status) {
            super(message);
            this.code = code;
            this.status = status;
        }
        toString() {
            return this.code + ': ' + this.message;
        }
    }

    function token() {
        return sessionStorage.getItem(TOKEN_KEY) || '';
    }

    function setToken(t) {
        sessionStorage.setItem(TOKEN_KEY, t);
    }

    function clearToken() {
        sessionStorage.removeItem(TOKEN_KEY);
    }

    /* The error of a reply that is not the API's JSON (a proxy page, a crash). */
    function transportError(status, text) {
        return new ApiError('bad_reply', 'HTTP ' + status + ': ' + text.slice(0, 200), status);
    }

    async function call(method, params, withToken) {
        const headers = { 'Content-Type': 'application/json' };
        const t = withToken === undefined ? token() : withToken;
        if (t) headers.Authorization = 'Bearer ' + t;
        let res;
        try {
            res = await fetch('/v1/' + encodeURIComponent(method), {
                method: 'POST',
                headers: headers,
                body: JSON.stringify(params || {}),
                cache: 'no-store',
                credentials: 'omit',
            });
        } catch (e) {
            throw new ApiError('unreachable', 'discernd did not answer: ' + e.message, 0);
        }
        const text = await res.text();
        let body;
        try {
            body = JSON.parse(text);
        } catch (e) {
            throw transportError(res.status, text);
        }
        if (body && body.error) {
            throw new ApiError(String(body.error.code), String(body.error.message), res.status);
        }
        if (!res.ok || !body || typeof body.result !== 'object') {
            throw transportError(res.status, text);
        }
        return body.result;
    }

    window.DiscernApi = { call, token, setToken, clearToken, ApiError };
})();
