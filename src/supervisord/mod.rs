//! Everything that speaks to supervisord: the event-listener wire format
//! ([`protocol`]), the typed events it carries ([`event`]), and the client for its
//! XML-RPC interface ([`xmlrpc`]).

pub mod event;
pub mod protocol;
pub mod xmlrpc;
