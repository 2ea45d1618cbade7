//! Everything that speaks to supervisord: the event-listener wire format
//! ([`protocol`]) and the typed events it carries ([`event`]).

pub mod event;
pub mod protocol;
