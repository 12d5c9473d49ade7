//! Stanza error conditions and how they map to SIP and HTTP status codes.
//!
//! [`Condition`] is the fixed set of stanza-error conditions defined by RFC 6120 §8.3.3, with
//! the error type each one usually carries ([`ErrorType`], RFC 6120 §8.3.2). It is the one
//! error vocabulary the gateway speaks internally: every adapter maps its protocol's failures
//! into a `Condition` and back.
//!
//! - SIP: [`Condition::to_sip_status`] / [`Condition::to_sip_status_with`] follow RFC 7247 §7.1
//!   (Table 2) and [`Condition::from_sip_status`] follows RFC 7247 §7.2 (Table 3, with its class
//!   fallbacks). [`sip_reason_phrase`] gives the RFC 3261 §21 phrase for a status line.
//! - HTTP (webhooks): no standard exists, so [`Condition::to_http_status`] and
//!   [`Condition::from_http_status`] define this crate's own mapping, documented row by row.
//!
//! This module only maps codes. It does not build `<error/>` elements or SIP responses, so the
//! header fields or character data that some rows require (a `Contact` for 301/302, an `Allow`
//! for 405, an authentication challenge for 401/407, the new address inside `<gone/>` or
//! `<redirect/>`) are the caller's job; each mapping function says which.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stanza-error condition defined by RFC 6120 §8.3.3.
///
/// The set is fixed by RFC 6120, so the enum is exhaustive. A condition element this module does
/// not know is an error for [`FromStr`]; a receiver that must carry on instead uses
/// [`Condition::from_received`], which maps it to [`Condition::UndefinedCondition`] as RFC 6120
/// §8.3.2 requires.
///
/// Serialized (serde, [`fmt::Display`], [`Condition::as_str`]) as the XML element name, e.g.
/// `"item-not-found"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// `<bad-request/>` (§8.3.3.1): the stanza does not conform to the schema or cannot be
    /// processed, e.g. an unrecognized `type` or an element that violates its defined syntax.
    /// Type `modify`.
    BadRequest,
    /// `<conflict/>` (§8.3.3.2): access cannot be granted because a resource with the same name
    /// or address already exists. Type `cancel`.
    Conflict,
    /// `<feature-not-implemented/>` (§8.3.3.3): the feature in the stanza is not implemented by
    /// the intended recipient or an intermediate server. Type `cancel` or `modify`.
    FeatureNotImplemented,
    /// `<forbidden/>` (§8.3.3.4): the requester lacks the permissions needed for the action
    /// (authorization, not authentication). Type `auth`.
    Forbidden,
    /// `<gone/>` (§8.3.3.5): the recipient or server can no longer be contacted at this address,
    /// typically permanently; the element SHOULD carry the new address (a URI or IRI) as
    /// character data. Type `cancel`.
    Gone,
    /// `<internal-server-error/>` (§8.3.3.6): a misconfiguration or other internal error
    /// prevented the server from processing the stanza. Type `cancel`.
    InternalServerError,
    /// `<item-not-found/>` (§8.3.3.7): the addressed JID or requested item cannot be found.
    /// Type `cancel`. MUST NOT be used where it would reveal network availability to an entity
    /// not authorized to know it; use [`Condition::ServiceUnavailable`] instead.
    ItemNotFound,
    /// `<jid-malformed/>` (§8.3.3.8): an XMPP address provided or communicated by the sender
    /// violates the address format rules. Type `modify`.
    JidMalformed,
    /// `<not-acceptable/>` (§8.3.3.9): the request is understood but does not meet criteria
    /// defined by the recipient or server. Type `modify`.
    NotAcceptable,
    /// `<not-allowed/>` (§8.3.3.10): the recipient or server does not allow any entity to
    /// perform the action. Type `cancel`.
    NotAllowed,
    /// `<not-authorized/>` (§8.3.3.11): the sender must provide credentials, or provided
    /// improper ones (authentication, despite the name). Type `auth`.
    NotAuthorized,
    /// `<policy-violation/>` (§8.3.3.12): the entity violated a local service policy (e.g.
    /// prohibited words); the policy MAY be named in `<text/>`. Type `modify` or `wait`,
    /// depending on the policy.
    PolicyViolation,
    /// `<recipient-unavailable/>` (§8.3.3.13): the intended recipient is temporarily
    /// unavailable, undergoing maintenance, etc. Type `wait`. Same disclosure rule as
    /// [`Condition::ItemNotFound`].
    RecipientUnavailable,
    /// `<redirect/>` (§8.3.3.14): requests are redirected to another entity, typically
    /// temporarily; the element SHOULD carry the alternate address as character data.
    /// Type `modify`.
    Redirect,
    /// `<registration-required/>` (§8.3.3.15): prior registration is needed to access the
    /// service (e.g. members-only rooms, legacy gateways). Type `auth`.
    RegistrationRequired,
    /// `<remote-server-not-found/>` (§8.3.3.16): a remote server named in the recipient's JID
    /// does not exist or cannot be resolved. Type `cancel`.
    RemoteServerNotFound,
    /// `<remote-server-timeout/>` (§8.3.3.17): a remote server was resolved but communication
    /// could not be established in reasonable time. Type `wait` (unless more permanent).
    RemoteServerTimeout,
    /// `<resource-constraint/>` (§8.3.3.18): the server or recipient is busy or lacks the
    /// resources to service the request. Type `wait`.
    ResourceConstraint,
    /// `<service-unavailable/>` (§8.3.3.19): the server or recipient does not currently provide
    /// the requested service. Type `cancel`. Also the condition to return instead of
    /// item-not-found or recipient-unavailable when those would disclose availability.
    ServiceUnavailable,
    /// `<subscription-required/>` (§8.3.3.20): a prior subscription is needed (e.g. presence
    /// authorization, opt-in feeds). Type `auth`.
    SubscriptionRequired,
    /// `<undefined-condition/>` (§8.3.3.21): none of the other conditions; SHOULD only be used
    /// with an application-specific condition. Any type may be used.
    UndefinedCondition,
    /// `<unexpected-request/>` (§8.3.3.22): the request is understood but was not expected at
    /// this time (e.g. out of order). Type `wait` or `modify`.
    UnexpectedRequest,
}

/// The `type` attribute of a stanza `<error/>` (RFC 6120 §8.3.2): what the sender should do next.
///
/// Serialized (serde, [`fmt::Display`], [`ErrorType::as_str`]) as the attribute value, e.g.
/// `"cancel"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorType {
    /// `auth`: retry after providing credentials.
    Auth,
    /// `cancel`: do not retry; the error cannot be remedied.
    Cancel,
    /// `continue`: proceed; the condition was only a warning.
    Continue,
    /// `modify`: retry after changing the data sent.
    Modify,
    /// `wait`: retry after waiting; the error is temporary.
    Wait,
}

/// Which XMPP address an error relates to, for the rows of RFC 7247 Table 2 that depend on it
/// (notes (1) and (2)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JidScope {
    /// A full JID (`localpart@domainpart/resourcepart`): one endpoint. Maps to SIP 4xx/405.
    #[default]
    Full,
    /// A bare JID (`localpart@domainpart`): the user as a whole. Maps to SIP 6xx/501.
    Bare,
}

/// Facts about an XMPP error that RFC 7247 Table 2 needs to pick between two SIP codes.
///
/// `SipHints::default()` describes an error about a full JID with no further detail; that is
/// what [`Condition::to_sip_status`] assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SipHints {
    /// Whether the error relates to a full or a bare JID (RFC 7247 §7.1 notes (1), (2)).
    pub scope: JidScope,
    /// `<gone/>` carried character data giving the new address (RFC 7247 §7.1 note (3)):
    /// 301 with that address in `Contact`, instead of 410.
    pub has_new_address: bool,
    /// `<remote-server-not-found/>` means the server could not be resolved rather than that it
    /// does not exist (RFC 7247 §7.1 note (4)): 408 instead of 404.
    pub resolution_failed: bool,
    /// `<unexpected-request/>` answers a SIP request that arrived while another request was
    /// pending in the same dialog: 491 Request Pending (RFC 3261 §21.4.27) instead of 400.
    pub pending_request_in_dialog: bool,
}

/// A string that is not the name of an RFC 6120 §8.3.3 stanza-error condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stanza error condition `{name}`")]
pub struct UnknownCondition {
    /// The rejected name, as given.
    pub name: String,
}

/// A string that is not one of the RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stanza error type `{name}`")]
pub struct UnknownErrorType {
    /// The rejected value, as given.
    pub name: String,
}

impl Condition {
    /// Every condition, in RFC 6120 §8.3.3 order.
    pub const ALL: [Condition; 22] = [
        Condition::BadRequest,
        Condition::Conflict,
        Condition::FeatureNotImplemented,
        Condition::Forbidden,
        Condition::Gone,
        Condition::InternalServerError,
        Condition::ItemNotFound,
        Condition::JidMalformed,
        Condition::NotAcceptable,
        Condition::NotAllowed,
        Condition::NotAuthorized,
        Condition::PolicyViolation,
        Condition::RecipientUnavailable,
        Condition::Redirect,
        Condition::RegistrationRequired,
        Condition::RemoteServerNotFound,
        Condition::RemoteServerTimeout,
        Condition::ResourceConstraint,
        Condition::ServiceUnavailable,
        Condition::SubscriptionRequired,
        Condition::UndefinedCondition,
        Condition::UnexpectedRequest,
    ];

    /// The XML element name, qualified by `urn:ietf:params:xml:ns:xmpp-stanzas` on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::Gone => "gone",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::Redirect => "redirect",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::SubscriptionRequired => "subscription-required",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The condition named by a received condition element, treating a name this module does
    /// not know as `<undefined-condition/>`, as RFC 6120 §8.3.2 requires of receivers.
    pub fn from_received(name: &str) -> Condition {
        name.parse().unwrap_or(Condition::UndefinedCondition)
    }

    /// The error type RFC 6120 §8.3.3 recommends for this condition.
    ///
    /// Where the RFC allows two types, the first it lists (which is also the one its example
    /// uses, except for `unexpected-request`) is returned; `undefined-condition` allows any
    /// type and gets `cancel`, the type that never invites a retry.
    pub const fn default_error_type(self) -> ErrorType {
        match self {
            Condition::BadRequest => ErrorType::Modify,
            Condition::Conflict => ErrorType::Cancel,
            // "cancel" or "modify".
            Condition::FeatureNotImplemented => ErrorType::Cancel,
            Condition::Forbidden => ErrorType::Auth,
            Condition::Gone => ErrorType::Cancel,
            Condition::InternalServerError => ErrorType::Cancel,
            Condition::ItemNotFound => ErrorType::Cancel,
            Condition::JidMalformed => ErrorType::Modify,
            Condition::NotAcceptable => ErrorType::Modify,
            Condition::NotAllowed => ErrorType::Cancel,
            Condition::NotAuthorized => ErrorType::Auth,
            // "modify" or "wait", depending on the policy; a rate limit is "wait".
            Condition::PolicyViolation => ErrorType::Modify,
            Condition::RecipientUnavailable => ErrorType::Wait,
            Condition::Redirect => ErrorType::Modify,
            Condition::RegistrationRequired => ErrorType::Auth,
            Condition::RemoteServerNotFound => ErrorType::Cancel,
            Condition::RemoteServerTimeout => ErrorType::Wait,
            Condition::ResourceConstraint => ErrorType::Wait,
            Condition::ServiceUnavailable => ErrorType::Cancel,
            Condition::SubscriptionRequired => ErrorType::Auth,
            // Any type may be used.
            Condition::UndefinedCondition => ErrorType::Cancel,
            // "wait" or "modify"; the RFC's example happens to use "modify".
            Condition::UnexpectedRequest => ErrorType::Wait,
        }
    }

    /// The SIP response code for this condition per RFC 7247 §7.1 (Table 2), for an error about
    /// a full JID with no further detail (`SipHints::default()`).
    ///
    /// See [`Condition::to_sip_status_with`] for the rows that depend on more than the
    /// condition. Always a 3xx–6xx code, and always one [`sip_reason_phrase`] knows.
    pub fn to_sip_status(self) -> u16 {
        self.to_sip_status_with(SipHints::default())
    }

    /// The SIP response code for this condition per RFC 7247 §7.1 (Table 2).
    ///
    /// Rows that depend on more than the condition use `hints`:
    ///
    /// | condition | full JID | bare JID | other hint |
    /// |---|---|---|---|
    /// | feature-not-implemented | 405 | 501 | (note 1) |
    /// | forbidden | 403 | 603 | (note 2) |
    /// | item-not-found | 404 | 604 | (note 2) |
    /// | not-acceptable | 406 | 606 | (note 2) |
    /// | recipient-unavailable | 480 | 600 | (note 2) |
    /// | gone | 410 | 410 | 301 if `has_new_address` (note 3) |
    /// | remote-server-not-found | 404 | 404 | 408 if `resolution_failed` (note 4) |
    /// | unexpected-request | 400 | 400 | 491 if `pending_request_in_dialog` |
    ///
    /// `service-unavailable` has no SIP equivalent (note 5: 503 is NOT RECOMMENDED because SIP
    /// clients apply it to the whole server); this returns 403, one of the two codes note 5 calls
    /// closest, because the other (405) needs an `Allow` list and is about methods.
    ///
    /// The caller building the response must add what the code requires: the new address from
    /// `<gone/>` or `<redirect/>` in `Contact` for 301/302 (RFC 3261 §21.3), an `Allow` header
    /// for 405 (§21.4.6), and a `WWW-Authenticate`/`Proxy-Authenticate` challenge for 401/407.
    pub fn to_sip_status_with(self, hints: SipHints) -> u16 {
        let bare = hints.scope == JidScope::Bare;
        let pick = |full: u16, bare_code: u16| if bare { bare_code } else { full };
        match self {
            Condition::BadRequest => 400,
            Condition::Conflict => 400,
            Condition::FeatureNotImplemented => pick(405, 501),
            Condition::Forbidden => pick(403, 603),
            Condition::Gone if hints.has_new_address => 301,
            Condition::Gone => 410,
            Condition::InternalServerError => 500,
            Condition::ItemNotFound => pick(404, 604),
            Condition::JidMalformed => 400,
            Condition::NotAcceptable => pick(406, 606),
            Condition::NotAllowed => 403,
            Condition::NotAuthorized => 401,
            Condition::PolicyViolation => 403,
            Condition::RecipientUnavailable => pick(480, 600),
            Condition::Redirect => 302,
            Condition::RegistrationRequired => 407,
            Condition::RemoteServerNotFound if hints.resolution_failed => 408,
            Condition::RemoteServerNotFound => 404,
            Condition::RemoteServerTimeout => 408,
            Condition::ResourceConstraint => 500,
            Condition::ServiceUnavailable => 403,
            Condition::SubscriptionRequired => 400,
            Condition::UndefinedCondition => 400,
            Condition::UnexpectedRequest if hints.pending_request_in_dialog => 491,
            Condition::UnexpectedRequest => 400,
        }
    }

    /// The condition for a SIP response code per RFC 7247 §7.2 (Table 3).
    ///
    /// - 100–299 (provisional and success) are not errors: `None`.
    /// - Codes listed in Table 3 map as listed; other 3xx map to `redirect`, 4xx to
    ///   `bad-request`, 5xx to `internal-server-error`, 6xx to `recipient-unavailable`.
    /// - Any other number (below 100, above 699) is not a code of any SIP class. RFC 3261 and
    ///   RFC 7247 say nothing about it; like an invalid HTTP status (RFC 9110 §15) it is treated
    ///   as a server failure: `internal-server-error`. It is never success.
    ///
    /// Where Table 3 notes alternatives "depending on the scenario" (403 → `not-allowed` or
    /// `policy-violation`, 404 and 408 → `remote-server-not-found`), the table's main entry is
    /// returned. For 301 the caller MUST put the new address (the `Contact`) in `<gone/>`, and
    /// for 410 MUST NOT (note 1); for the other 3xx the `Contact` belongs in `<redirect/>`.
    pub fn from_sip_status(code: u16) -> Option<Condition> {
        match code {
            100..=299 => None,
            300..=699 => Some(sip_table_3(code).unwrap_or(match code / 100 {
                // Class fallbacks (RFC 7247 §7.2, first paragraph).
                3 => Condition::Redirect,
                4 => Condition::BadRequest,
                5 => Condition::InternalServerError,
                _ => Condition::RecipientUnavailable,
            })),
            _ => Some(Condition::InternalServerError),
        }
    }

    /// The HTTP status for this condition on the webhook API. No RFC defines this; the choices:
    ///
    /// | condition | HTTP | why |
    /// |---|---|---|
    /// | bad-request | 400 | same meaning |
    /// | conflict | 409 | same meaning |
    /// | feature-not-implemented | 501 | "does not support the functionality required" |
    /// | forbidden | 403 | authorization refused |
    /// | gone | 410 | permanent; any new address goes in the response body |
    /// | internal-server-error | 500 | same meaning |
    /// | item-not-found | 404 | same meaning |
    /// | jid-malformed | 400 | a syntax error in an address the client sent |
    /// | not-acceptable | 422 | valid but fails the recipient's criteria; 406 is about `Accept` |
    /// | not-allowed | 403 | refused for everyone; 405 is about the HTTP method |
    /// | not-authorized | 401 | authentication; the caller adds `WWW-Authenticate` |
    /// | policy-violation | 403 | refused by local policy (a rate limit is better sent as 429) |
    /// | recipient-unavailable | 503 | temporary ("wait"); the caller SHOULD add `Retry-After` |
    /// | redirect | 307 | temporary and method-preserving; alternate address in `Location` |
    /// | registration-required | 403 | HTTP has no registration; access refused until done |
    /// | remote-server-not-found | 502 | the gateway could not reach the upstream server |
    /// | remote-server-timeout | 504 | the upstream server did not answer in time |
    /// | resource-constraint | 503 | busy or out of resources; temporary |
    /// | service-unavailable | 403 | like RFC 7247 §7.1 note (5): not 503, which HTTP clients retry and apply to the whole service, while this is "cancel" and often hides whether an account exists |
    /// | subscription-required | 403 | access refused until subscribed |
    /// | undefined-condition | 500 | nothing more specific is known |
    /// | unexpected-request | 409 | conflicts with the current state (out of order) |
    ///
    /// Always a 3xx–5xx code.
    pub const fn to_http_status(self) -> u16 {
        match self {
            Condition::BadRequest => 400,
            Condition::Conflict => 409,
            Condition::FeatureNotImplemented => 501,
            Condition::Forbidden => 403,
            Condition::Gone => 410,
            Condition::InternalServerError => 500,
            Condition::ItemNotFound => 404,
            Condition::JidMalformed => 400,
            Condition::NotAcceptable => 422,
            Condition::NotAllowed => 403,
            Condition::NotAuthorized => 401,
            Condition::PolicyViolation => 403,
            Condition::RecipientUnavailable => 503,
            Condition::Redirect => 307,
            Condition::RegistrationRequired => 403,
            Condition::RemoteServerNotFound => 502,
            Condition::RemoteServerTimeout => 504,
            Condition::ResourceConstraint => 503,
            Condition::ServiceUnavailable => 403,
            Condition::SubscriptionRequired => 403,
            Condition::UndefinedCondition => 500,
            Condition::UnexpectedRequest => 409,
        }
    }

    /// The condition for an HTTP status returned by a webhook endpoint. No RFC defines this; it
    /// mirrors RFC 7247 §7.2 where HTTP and SIP codes share a meaning:
    ///
    /// | HTTP | condition | why |
    /// |---|---|---|
    /// | 100–299 | `None` | not an error |
    /// | 301, 308 | gone | permanent move; the `Location` belongs in `<gone/>` (as SIP 301) |
    /// | other 3xx | redirect | the `Location`, if any, belongs in `<redirect/>` |
    /// | 400 | bad-request | same meaning |
    /// | 401 | not-authorized | authentication (as SIP 401) |
    /// | 403 | forbidden | same meaning (as SIP 403) |
    /// | 404 | item-not-found | same meaning (as SIP 404) |
    /// | 405 | feature-not-implemented | the endpoint does not take this method (as SIP 405) |
    /// | 406, 415, 422 | not-acceptable | the endpoint cannot accept this content |
    /// | 408 | remote-server-timeout | timeout (as SIP 408) |
    /// | 409 | conflict | same meaning |
    /// | 410 | gone | same meaning (as SIP 410) |
    /// | 413, 414, 429, 451 | policy-violation | size, rate or legal policy (413/414 as SIP) |
    /// | other 4xx | bad-request | class fallback (as RFC 7247 §7.2) |
    /// | 500 | internal-server-error | same meaning |
    /// | 501 | feature-not-implemented | same meaning (as SIP 501) |
    /// | 502 | remote-server-not-found | upstream unreachable (as SIP 502) |
    /// | 503 | recipient-unavailable | temporarily unavailable or in maintenance ("wait") |
    /// | 504 | remote-server-timeout | same meaning (as SIP 504) |
    /// | 507 | resource-constraint | out of storage |
    /// | other 5xx | internal-server-error | class fallback (as RFC 7247 §7.2) |
    /// | < 100, > 599 | internal-server-error | invalid; RFC 9110 §15 says treat it as 5xx |
    pub fn from_http_status(code: u16) -> Option<Condition> {
        match code {
            100..=299 => None,
            300..=599 => Some(http_table(code).unwrap_or(match code / 100 {
                3 => Condition::Redirect,
                4 => Condition::BadRequest,
                _ => Condition::InternalServerError,
            })),
            _ => Some(Condition::InternalServerError),
        }
    }
}

/// The rows of RFC 7247 §7.2 Table 3 that name a single code.
const fn sip_table_3(code: u16) -> Option<Condition> {
    let condition = match code {
        300 | 302 | 305 => Condition::Redirect,
        301 => Condition::Gone,
        380 => Condition::NotAcceptable,
        400 => Condition::BadRequest,
        401 => Condition::NotAuthorized,
        // 402: <payment-required/> was removed in RFC 6120 (note 2).
        402 => Condition::BadRequest,
        403 => Condition::Forbidden,
        404 => Condition::ItemNotFound,
        405 => Condition::FeatureNotImplemented,
        406 => Condition::NotAcceptable,
        407 => Condition::RegistrationRequired,
        408 => Condition::RemoteServerTimeout,
        410 => Condition::Gone,
        413 | 414 => Condition::PolicyViolation,
        415 | 416 => Condition::NotAcceptable,
        420 => Condition::FeatureNotImplemented,
        421 => Condition::NotAcceptable,
        423 => Condition::ResourceConstraint,
        430 => Condition::RecipientUnavailable,
        439 => Condition::FeatureNotImplemented,
        440 => Condition::PolicyViolation,
        480 => Condition::RecipientUnavailable,
        481 => Condition::ItemNotFound,
        482 | 483 => Condition::NotAcceptable,
        484 | 485 => Condition::ItemNotFound,
        486 | 487 => Condition::RecipientUnavailable,
        488 => Condition::NotAcceptable,
        489 => Condition::PolicyViolation,
        491 => Condition::UnexpectedRequest,
        493 => Condition::BadRequest,
        500 => Condition::InternalServerError,
        501 => Condition::FeatureNotImplemented,
        502 => Condition::RemoteServerNotFound,
        // Not service-unavailable: see RFC 7247 §7.1 note (5).
        503 => Condition::InternalServerError,
        504 => Condition::RemoteServerTimeout,
        505 => Condition::NotAcceptable,
        513 => Condition::PolicyViolation,
        600 | 603 => Condition::RecipientUnavailable,
        604 => Condition::ItemNotFound,
        606 => Condition::NotAcceptable,
        _ => return None,
    };
    Some(condition)
}
/// The HTTP statuses [`Condition::from_http_status`] maps individually.
const fn http_table(code: u16) -> Option<Condition> {
    let condition = match code {
        301 | 308 => Condition::Gone,
        400 => Condition::BadRequest,
        401 => Condition::NotAuthorized,
        403 => Condition::Forbidden,
        404 => Condition::ItemNotFound,
        405 => Condition::FeatureNotImplemented,
        406 | 415 | 422 => Condition::NotAcceptable,
        408 => Condition::RemoteServerTimeout,
        409 => Condition::Conflict,
        410 => Condition::Gone,
        413 | 414 | 429 | 451 => Condition::PolicyViolation,
        500 => Condition::InternalServerError,
        501 => Condition::FeatureNotImplemented,
        502 => Condition::RemoteServerNotFound,
        503 => Condition::RecipientUnavailable,
        504 => Condition::RemoteServerTimeout,
        507 => Condition::ResourceConstraint,
        _ => return None,
    };
    Some(condition)
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Condition {
    type Err = UnknownCondition;

    /// Parses an exact, case-sensitive element name such as `item-not-found`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Condition::ALL
            .into_iter()
            .find(|condition| condition.as_str() == s)
            .ok_or_else(|| UnknownCondition { name: s.to_owned() })
    }
}

impl ErrorType {
    /// Every error type, in RFC 6120 §8.3.2 order.
    pub const ALL: [ErrorType; 5] = [
        ErrorType::Auth,
        ErrorType::Cancel,
        ErrorType::Continue,
        ErrorType::Modify,
        ErrorType::Wait,
    ];

    /// The value of the `type` attribute.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorType {
    type Err = UnknownErrorType;

    /// Parses an exact, case-sensitive attribute value such as `cancel`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorType::ALL
            .into_iter()
            .find(|error_type| error_type.as_str() == s)
            .ok_or_else(|| UnknownErrorType { name: s.to_owned() })
    }
}

/// The RFC 3261 §21 reason phrase for a SIP status code.
///
/// Covers every code RFC 3261 defines, which includes every code [`Condition::to_sip_status_with`]
/// produces. Other codes get the name of their class from the §21 headings ("Request Failure"
/// for an unknown 4xx, and so on), or "Unknown" outside 100–699.
pub const fn sip_reason_phrase(code: u16) -> &'static str {
    if let Some(phrase) = rfc3261_phrase(code) {
        return phrase;
    }
    match code {
        100..=199 => "Provisional",
        200..=299 => "Successful",
        300..=399 => "Redirection",
        400..=499 => "Request Failure",
        500..=599 => "Server Failure",
        600..=699 => "Global Failure",
        _ => "Unknown",
    }
}

/// The reason phrases of RFC 3261 §21.
const fn rfc3261_phrase(code: u16) -> Option<&'static str> {
    let phrase = match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => return None,
    };
    Some(phrase)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FULL: SipHints = SipHints {
        scope: JidScope::Full,
        has_new_address: false,
        resolution_failed: false,
        pending_request_in_dialog: false,
    };
    const BARE: SipHints = SipHints {
        scope: JidScope::Bare,
        ..FULL
    };

    /// One test per row (and per alternative within a row) of RFC 7247 §7.1 Table 2.
    macro_rules! xmpp_to_sip {
        ($($name:ident: $condition:ident, $hints:expr => $code:expr;)*) => {
            $(
                #[test]
                fn $name() {
                    assert_eq!(Condition::$condition.to_sip_status_with($hints), $code);
                }
            )*
        };
    }

    /// One test per row of RFC 7247 §7.2 Table 3 (the class rows are tested further down).
    macro_rules! sip_to_xmpp {
        ($($name:ident: $code:expr => $condition:ident;)*) => {
            $(
                #[test]
                fn $name() {
                    assert_eq!(Condition::from_sip_status($code), Some(Condition::$condition));
                }
            )*
        };
    }

    macro_rules! condition_to_http {
        ($($name:ident: $condition:ident => $code:expr;)*) => {
            $(
                #[test]
                fn $name() {
                    assert_eq!(Condition::$condition.to_http_status(), $code);
                }
            )*
        };
    }

    macro_rules! http_to_condition {
        ($($name:ident: $code:expr => $condition:ident;)*) => {
            $(
                #[test]
                fn $name() {
                    assert_eq!(Condition::from_http_status($code), Some(Condition::$condition));
                }
            )*
        };
    }

    xmpp_to_sip! {
        rfc7247_7_1_bad_request_400: BadRequest, FULL => 400;
        rfc7247_7_1_conflict_400: Conflict, FULL => 400;
        rfc7247_7_1_feature_not_implemented_full_jid_405: FeatureNotImplemented, FULL => 405;
        rfc7247_7_1_feature_not_implemented_bare_jid_501: FeatureNotImplemented, BARE => 501;
        rfc7247_7_1_forbidden_full_jid_403: Forbidden, FULL => 403;
        rfc7247_7_1_forbidden_bare_jid_603: Forbidden, BARE => 603;
        rfc7247_7_1_gone_without_address_410: Gone, FULL => 410;
        rfc7247_7_1_gone_with_address_301: Gone, SipHints { has_new_address: true, ..FULL } => 301;
        rfc7247_7_1_internal_server_error_500: InternalServerError, FULL => 500;
        rfc7247_7_1_item_not_found_full_jid_404: ItemNotFound, FULL => 404;
        rfc7247_7_1_item_not_found_bare_jid_604: ItemNotFound, BARE => 604;
        rfc7247_7_1_jid_malformed_400: JidMalformed, FULL => 400;
        rfc7247_7_1_not_acceptable_full_jid_406: NotAcceptable, FULL => 406;
        rfc7247_7_1_not_acceptable_bare_jid_606: NotAcceptable, BARE => 606;
        rfc7247_7_1_not_allowed_403: NotAllowed, FULL => 403;
        rfc7247_7_1_not_authorized_401: NotAuthorized, FULL => 401;
        rfc7247_7_1_policy_violation_403: PolicyViolation, FULL => 403;
        rfc7247_7_1_recipient_unavailable_full_jid_480: RecipientUnavailable, FULL => 480;
        rfc7247_7_1_recipient_unavailable_bare_jid_600: RecipientUnavailable, BARE => 600;
        rfc7247_7_1_redirect_302: Redirect, FULL => 302;
        rfc7247_7_1_registration_required_407: RegistrationRequired, FULL => 407;
        rfc7247_7_1_remote_server_not_found_does_not_exist_404: RemoteServerNotFound, FULL => 404;
        rfc7247_7_1_remote_server_not_found_unresolvable_408:
            RemoteServerNotFound, SipHints { resolution_failed: true, ..FULL } => 408;
        rfc7247_7_1_remote_server_timeout_408: RemoteServerTimeout, FULL => 408;
        rfc7247_7_1_resource_constraint_500: ResourceConstraint, FULL => 500;
        rfc7247_7_1_service_unavailable_403_not_503: ServiceUnavailable, FULL => 403;
        rfc7247_7_1_subscription_required_400: SubscriptionRequired, FULL => 400;
        rfc7247_7_1_undefined_condition_400: UndefinedCondition, FULL => 400;
        rfc7247_7_1_unexpected_request_400: UnexpectedRequest, FULL => 400;
        rfc7247_7_1_unexpected_request_pending_in_dialog_491:
            UnexpectedRequest, SipHints { pending_request_in_dialog: true, ..FULL } => 491;
    }

    sip_to_xmpp! {
        rfc7247_7_2_sip_300_redirect: 300 => Redirect;
        rfc7247_7_2_sip_301_gone: 301 => Gone;
        rfc7247_7_2_sip_302_redirect: 302 => Redirect;
        rfc7247_7_2_sip_305_redirect: 305 => Redirect;
        rfc7247_7_2_sip_380_not_acceptable: 380 => NotAcceptable;
        rfc7247_7_2_sip_400_bad_request: 400 => BadRequest;
        rfc7247_7_2_sip_401_not_authorized: 401 => NotAuthorized;
        rfc7247_7_2_sip_402_bad_request: 402 => BadRequest;
        rfc7247_7_2_sip_403_forbidden: 403 => Forbidden;
        rfc7247_7_2_sip_404_item_not_found: 404 => ItemNotFound;
        rfc7247_7_2_sip_405_feature_not_implemented: 405 => FeatureNotImplemented;
        rfc7247_7_2_sip_406_not_acceptable: 406 => NotAcceptable;
        rfc7247_7_2_sip_407_registration_required: 407 => RegistrationRequired;
        rfc7247_7_2_sip_408_remote_server_timeout: 408 => RemoteServerTimeout;
        rfc7247_7_2_sip_410_gone: 410 => Gone;
        rfc7247_7_2_sip_413_policy_violation: 413 => PolicyViolation;
        rfc7247_7_2_sip_414_policy_violation: 414 => PolicyViolation;
        rfc7247_7_2_sip_415_not_acceptable: 415 => NotAcceptable;
        rfc7247_7_2_sip_416_not_acceptable: 416 => NotAcceptable;
        rfc7247_7_2_sip_420_feature_not_implemented: 420 => FeatureNotImplemented;
        rfc7247_7_2_sip_421_not_acceptable: 421 => NotAcceptable;
        rfc7247_7_2_sip_423_resource_constraint: 423 => ResourceConstraint;
        rfc7247_7_2_sip_430_recipient_unavailable: 430 => RecipientUnavailable;
        rfc7247_7_2_sip_439_feature_not_implemented: 439 => FeatureNotImplemented;
        rfc7247_7_2_sip_440_policy_violation: 440 => PolicyViolation;
        rfc7247_7_2_sip_480_recipient_unavailable: 480 => RecipientUnavailable;
        rfc7247_7_2_sip_481_item_not_found: 481 => ItemNotFound;
        rfc7247_7_2_sip_482_not_acceptable: 482 => NotAcceptable;
        rfc7247_7_2_sip_483_not_acceptable: 483 => NotAcceptable;
        rfc7247_7_2_sip_484_item_not_found: 484 => ItemNotFound;
        rfc7247_7_2_sip_485_item_not_found: 485 => ItemNotFound;
        rfc7247_7_2_sip_486_recipient_unavailable: 486 => RecipientUnavailable;
        rfc7247_7_2_sip_487_recipient_unavailable: 487 => RecipientUnavailable;
        rfc7247_7_2_sip_488_not_acceptable: 488 => NotAcceptable;
        rfc7247_7_2_sip_489_policy_violation: 489 => PolicyViolation;
        rfc7247_7_2_sip_491_unexpected_request: 491 => UnexpectedRequest;
        rfc7247_7_2_sip_493_bad_request: 493 => BadRequest;
        rfc7247_7_2_sip_500_internal_server_error: 500 => InternalServerError;
        rfc7247_7_2_sip_501_feature_not_implemented: 501 => FeatureNotImplemented;
        rfc7247_7_2_sip_502_remote_server_not_found: 502 => RemoteServerNotFound;
        rfc7247_7_2_sip_503_internal_server_error: 503 => InternalServerError;
        rfc7247_7_2_sip_504_remote_server_timeout: 504 => RemoteServerTimeout;
        rfc7247_7_2_sip_505_not_acceptable: 505 => NotAcceptable;
        rfc7247_7_2_sip_513_policy_violation: 513 => PolicyViolation;
        rfc7247_7_2_sip_600_recipient_unavailable: 600 => RecipientUnavailable;
        rfc7247_7_2_sip_603_recipient_unavailable: 603 => RecipientUnavailable;
        rfc7247_7_2_sip_604_item_not_found: 604 => ItemNotFound;
        rfc7247_7_2_sip_606_not_acceptable: 606 => NotAcceptable;
    }

    /// Every code Table 3 lists explicitly; anything else in 300–699 takes its class fallback.
    const TABLE_3_CODES: [u16; 48] = [
        300, 301, 302, 305, 380, 400, 401, 402, 403, 404, 405, 406, 407, 408, 410, 413, 414, 415,
        416, 420, 421, 423, 430, 439, 440, 480, 481, 482, 483, 484, 485, 486, 487, 488, 489, 491,
        493, 500, 501, 502, 503, 504, 505, 513, 600, 603, 604, 606,
    ];

    fn class_fallback(code: u16) -> Condition {
        match code / 100 {
            3 => Condition::Redirect,
            4 => Condition::BadRequest,
            5 => Condition::InternalServerError,
            _ => Condition::RecipientUnavailable,
        }
    }

    fn assert_unlisted(codes: &[u16], expected: Condition) {
        for &code in codes {
            assert!(
                !TABLE_3_CODES.contains(&code),
                "{code} is listed in Table 3"
            );
            assert_eq!(
                Condition::from_sip_status(code),
                Some(expected),
                "SIP {code}"
            );
        }
    }

    #[test]
    fn rfc7247_7_2_unlisted_3xx_redirect() {
        assert_unlisted(&[303, 304, 399], Condition::Redirect);
    }

    #[test]
    fn rfc7247_7_2_unlisted_4xx_bad_request() {
        assert_unlisted(
            &[409, 411, 412, 417, 422, 428, 429, 433, 469, 470, 494, 499],
            Condition::BadRequest,
        );
    }

    #[test]
    fn rfc7247_7_2_unlisted_5xx_internal_server_error() {
        assert_unlisted(&[555, 580, 599], Condition::InternalServerError);
    }

    #[test]
    fn rfc7247_7_2_unlisted_6xx_recipient_unavailable() {
        assert_unlisted(&[601, 607, 608, 699], Condition::RecipientUnavailable);
    }

    #[test]
    fn rfc7247_7_sip_1xx_2xx_are_not_errors() {
        for code in [100, 180, 181, 182, 183, 199, 200, 202, 204, 299] {
            assert_eq!(Condition::from_sip_status(code), None, "SIP {code}");
        }
    }

    #[test]
    fn sip_status_outside_classes_is_internal_server_error() {
        for code in [0, 1, 99, 700, 999, u16::MAX] {
            assert_eq!(
                Condition::from_sip_status(code),
                Some(Condition::InternalServerError),
                "SIP {code}"
            );
        }
    }

    condition_to_http! {
        http_bad_request_400: BadRequest => 400;
        http_conflict_409: Conflict => 409;
        http_feature_not_implemented_501: FeatureNotImplemented => 501;
        http_forbidden_403: Forbidden => 403;
        http_gone_410: Gone => 410;
        http_internal_server_error_500: InternalServerError => 500;
        http_item_not_found_404: ItemNotFound => 404;
        http_jid_malformed_400: JidMalformed => 400;
        http_not_acceptable_422: NotAcceptable => 422;
        http_not_allowed_403: NotAllowed => 403;
        http_not_authorized_401: NotAuthorized => 401;
        http_policy_violation_403: PolicyViolation => 403;
        http_recipient_unavailable_503: RecipientUnavailable => 503;
        http_redirect_307: Redirect => 307;
        http_registration_required_403: RegistrationRequired => 403;
        http_remote_server_not_found_502: RemoteServerNotFound => 502;
        http_remote_server_timeout_504: RemoteServerTimeout => 504;
        http_resource_constraint_503: ResourceConstraint => 503;
        http_service_unavailable_403: ServiceUnavailable => 403;
        http_subscription_required_403: SubscriptionRequired => 403;
        http_undefined_condition_500: UndefinedCondition => 500;
        http_unexpected_request_409: UnexpectedRequest => 409;
    }

    http_to_condition! {
        http_status_301_gone: 301 => Gone;
        http_status_308_gone: 308 => Gone;
        http_status_302_redirect: 302 => Redirect;
        http_status_307_redirect: 307 => Redirect;
        http_status_400_bad_request: 400 => BadRequest;
        http_status_401_not_authorized: 401 => NotAuthorized;
        http_status_403_forbidden: 403 => Forbidden;
        http_status_404_item_not_found: 404 => ItemNotFound;
        http_status_405_feature_not_implemented: 405 => FeatureNotImplemented;
        http_status_406_not_acceptable: 406 => NotAcceptable;
        http_status_408_remote_server_timeout: 408 => RemoteServerTimeout;
        http_status_409_conflict: 409 => Conflict;
        http_status_410_gone: 410 => Gone;
        http_status_413_policy_violation: 413 => PolicyViolation;
        http_status_414_policy_violation: 414 => PolicyViolation;
        http_status_415_not_acceptable: 415 => NotAcceptable;
        http_status_422_not_acceptable: 422 => NotAcceptable;
        http_status_429_policy_violation: 429 => PolicyViolation;
        http_status_451_policy_violation: 451 => PolicyViolation;
        http_status_500_internal_server_error: 500 => InternalServerError;
        http_status_501_feature_not_implemented: 501 => FeatureNotImplemented;
        http_status_502_remote_server_not_found: 502 => RemoteServerNotFound;
        http_status_503_recipient_unavailable: 503 => RecipientUnavailable;
        http_status_504_remote_server_timeout: 504 => RemoteServerTimeout;
        http_status_507_resource_constraint: 507 => ResourceConstraint;
    }

    #[test]
    fn http_unlisted_3xx_redirect() {
        for code in [300, 303, 304, 399] {
            assert_eq!(
                Condition::from_http_status(code),
                Some(Condition::Redirect),
                "HTTP {code}"
            );
        }
    }

    #[test]
    fn http_unlisted_4xx_bad_request() {
        for code in [402, 407, 411, 412, 416, 418, 421, 425, 428, 431, 499] {
            assert_eq!(
                Condition::from_http_status(code),
                Some(Condition::BadRequest),
                "HTTP {code}"
            );
        }
    }

    #[test]
    fn http_unlisted_5xx_internal_server_error() {
        for code in [505, 506, 508, 511, 599] {
            assert_eq!(
                Condition::from_http_status(code),
                Some(Condition::InternalServerError),
                "HTTP {code}"
            );
        }
    }

    #[test]
    fn http_1xx_2xx_are_not_errors() {
        for code in [100, 101, 199, 200, 201, 204, 299] {
            assert_eq!(Condition::from_http_status(code), None, "HTTP {code}");
        }
    }

    #[test]
    fn rfc9110_15_invalid_http_status_is_internal_server_error() {
        for code in [0, 99, 600, 999, u16::MAX] {
            assert_eq!(
                Condition::from_http_status(code),
                Some(Condition::InternalServerError),
                "HTTP {code}"
            );
        }
    }

    #[test]
    fn http_status_we_send_maps_back_to_the_same_status() {
        // Several conditions share a status, so from_http_status picks one of them; whichever
        // it picks must send the same status again, and a status used by one condition only
        // must come back as that condition.
        for condition in Condition::ALL {
            let code = condition.to_http_status();
            let back = Condition::from_http_status(code);
            assert_eq!(
                back.map(Condition::to_http_status),
                Some(code),
                "{condition}"
            );
            let sharing = Condition::ALL
                .into_iter()
                .filter(|other| other.to_http_status() == code)
                .count();
            if sharing == 1 {
                assert_eq!(back, Some(condition), "{condition}");
            }
        }
    }

    #[test]
    fn rfc6120_8_3_3_names_round_trip() {
        assert_eq!(Condition::ALL.len(), 22);
        for condition in Condition::ALL {
            let name = condition.as_str();
            assert_eq!(name.parse::<Condition>(), Ok(condition));
            assert_eq!(condition.to_string(), name);
            assert_eq!(Condition::from_received(name), condition);
        }
    }

    #[test]
    fn rfc6120_8_3_3_unknown_name_is_an_error() {
        for name in [
            "",
            "Bad-Request",
            "bad_request",
            " bad-request",
            "payment-required",
        ] {
            assert_eq!(
                name.parse::<Condition>(),
                Err(UnknownCondition {
                    name: name.to_owned()
                })
            );
        }
    }

    #[test]
    fn rfc6120_8_3_2_unknown_received_condition_is_undefined_condition() {
        assert_eq!(
            Condition::from_received("payment-required"),
            Condition::UndefinedCondition
        );
        assert_eq!(Condition::from_received(""), Condition::UndefinedCondition);
    }

    #[test]
    fn rfc6120_8_3_3_default_error_types() {
        use ErrorType::*;
        let expected = [
            (Condition::BadRequest, Modify),
            (Condition::Conflict, Cancel),
            (Condition::FeatureNotImplemented, Cancel),
            (Condition::Forbidden, Auth),
            (Condition::Gone, Cancel),
            (Condition::InternalServerError, Cancel),
            (Condition::ItemNotFound, Cancel),
            (Condition::JidMalformed, Modify),
            (Condition::NotAcceptable, Modify),
            (Condition::NotAllowed, Cancel),
            (Condition::NotAuthorized, Auth),
            (Condition::PolicyViolation, Modify),
            (Condition::RecipientUnavailable, Wait),
            (Condition::Redirect, Modify),
            (Condition::RegistrationRequired, Auth),
            (Condition::RemoteServerNotFound, Cancel),
            (Condition::RemoteServerTimeout, Wait),
            (Condition::ResourceConstraint, Wait),
            (Condition::ServiceUnavailable, Cancel),
            (Condition::SubscriptionRequired, Auth),
            (Condition::UndefinedCondition, Cancel),
            (Condition::UnexpectedRequest, Wait),
        ];
        assert_eq!(expected.len(), Condition::ALL.len());
        for (condition, error_type) in expected {
            assert_eq!(condition.default_error_type(), error_type, "{condition}");
        }
    }

    #[test]
    fn rfc6120_8_3_2_error_type_names_round_trip() {
        for error_type in ErrorType::ALL {
            assert_eq!(error_type.as_str().parse::<ErrorType>(), Ok(error_type));
            assert_eq!(error_type.to_string(), error_type.as_str());
        }
        assert_eq!(
            "Cancel".parse::<ErrorType>(),
            Err(UnknownErrorType {
                name: "Cancel".to_owned()
            })
        );
    }

    #[test]
    fn serde_uses_xml_names() -> Result<(), serde_json::Error> {
        for condition in Condition::ALL {
            let json = serde_json::to_string(&condition)?;
            assert_eq!(json, format!("\"{}\"", condition.as_str()));
            assert_eq!(serde_json::from_str::<Condition>(&json)?, condition);
        }
        for error_type in ErrorType::ALL {
            let json = serde_json::to_string(&error_type)?;
            assert_eq!(json, format!("\"{}\"", error_type.as_str()));
            assert_eq!(serde_json::from_str::<ErrorType>(&json)?, error_type);
        }
        assert!(serde_json::from_str::<Condition>("\"payment-required\"").is_err());
        Ok(())
    }

    #[test]
    fn rfc3261_21_reason_phrases() {
        assert_eq!(sip_reason_phrase(404), "Not Found");
        assert_eq!(sip_reason_phrase(480), "Temporarily Unavailable");
        assert_eq!(sip_reason_phrase(491), "Request Pending");
        assert_eq!(sip_reason_phrase(604), "Does Not Exist Anywhere");
        assert_eq!(sip_reason_phrase(499), "Request Failure");
        assert_eq!(sip_reason_phrase(699), "Global Failure");
        assert_eq!(sip_reason_phrase(700), "Unknown");
    }

    fn any_condition() -> impl Strategy<Value = Condition> {
        proptest::sample::select(Condition::ALL.to_vec())
    }

    fn any_hints() -> impl Strategy<Value = SipHints> {
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(bare, has_new_address, resolution_failed, pending_request_in_dialog)| SipHints {
                scope: if bare { JidScope::Bare } else { JidScope::Full },
                has_new_address,
                resolution_failed,
                pending_request_in_dialog,
            },
        )
    }

    proptest! {
        #[test]
        fn from_sip_status_is_none_exactly_for_1xx_2xx(code in any::<u16>()) {
            let condition = Condition::from_sip_status(code);
            prop_assert_eq!(condition.is_none(), (100..300).contains(&code));
            if (300..700).contains(&code) && !TABLE_3_CODES.contains(&code) {
                prop_assert_eq!(condition, Some(class_fallback(code)));
            }
        }

        #[test]
        fn to_sip_status_is_a_3xx_to_6xx_code_with_a_phrase(
            condition in any_condition(),
            hints in any_hints(),
        ) {
            let code = condition.to_sip_status_with(hints);
            prop_assert!((300..700).contains(&code));
            // A specific RFC 3261 phrase, not a class name.
            let class_names = ["Redirection", "Request Failure", "Server Failure", "Global Failure"];
            prop_assert!(!class_names.contains(&sip_reason_phrase(code)));
            prop_assert_ne!(code, 503);
        }

        #[test]
        fn from_http_status_is_none_exactly_for_1xx_2xx(code in any::<u16>()) {
            prop_assert_eq!(
                Condition::from_http_status(code).is_none(),
                (100..300).contains(&code)
            );
        }

        #[test]
        fn to_http_status_is_a_3xx_to_5xx_code(condition in any_condition()) {
            prop_assert!((300..600).contains(&condition.to_http_status()));
        }

        #[test]
        fn condition_parsing_never_panics(name in ".*") {
            match name.parse::<Condition>() {
                Ok(condition) => prop_assert_eq!(condition.as_str(), name.as_str()),
                Err(error) => prop_assert_eq!(error.name, name.clone()),
            }
            let _ = Condition::from_received(&name);
        }

        #[test]
        fn sip_reason_phrase_never_panics(code in any::<u16>()) {
            prop_assert!(!sip_reason_phrase(code).is_empty());
        }
    }
}
