//! Attaching the program to interfaces, and the counter slot each interface gets.
use aya::programs::{
    XdpMode,
    links::{FdLink, PinnedLink},
};
use xdpguard_common::{IFINDEX_LIMIT, MAX_INTERFACES, map_names};

use super::{
    AttachMode, AttachedMode, Attachment, Dataplane, DataplaneError, if_index,
    pins::{LINK_PIN_PREFIX, io_error, pin_error},
};

impl Dataplane {
    /// The interface slot for `ifindex`, assigning a free one if it has none.
    pub(super) fn slot_of(&mut self, ifindex: u32) -> Result<u32, DataplaneError> {
        if ifindex == 0 || ifindex >= IFINDEX_LIMIT {
            return Ok(0);
        }
        let map_err = |source| DataplaneError::Map {
            map: map_names::IFACE_SLOT,
            source,
        };
        let current = self.maps.iface_slot.get(&ifindex, 0).map_err(map_err)?;
        if current != 0 {
            return Ok(current);
        }
        let used: Vec<u32> = self.attachments.values().map(|a| a.slot).collect();
        let Some(slot) = (1..MAX_INTERFACES).find(|slot| !used.contains(slot)) else {
            log::warn!(
                "more than {} interfaces: ifindex {ifindex} counts with the unattributed frames",
                MAX_INTERFACES - 1
            );
            return Ok(0);
        };
        self.maps
            .iface_slot
            .set(ifindex, slot, 0)
            .map_err(map_err)?;
        Ok(slot)
    }

    /// Attach to `interface` (in the caller's network namespace). With a pin directory the
    /// link is pinned and outlives this process; an interface already attached is kept.
    ///
    /// # Errors
    /// When the interface does not exist or refuses the mode.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        if let Some(existing) = self.attachments.get(interface) {
            return Ok(existing.mode);
        }
        let ifindex = if_index(interface)
            .ok_or_else(|| DataplaneError::NoSuchInterface(interface.to_owned()))?;
        let slot = self.slot_of(ifindex)?;
        let attach_error = |source| DataplaneError::Attach {
            interface: interface.to_owned(),
            mode,
            source,
        };
        let program = self.program_mut();
        let (link, attached) = match mode {
            AttachMode::Native => (
                program
                    .attach_to_if_index(ifindex, XdpMode::Driver)
                    .map_err(attach_error)?,
                AttachedMode::Native,
            ),
            AttachMode::Generic => (
                program
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(attach_error)?,
                AttachedMode::Generic,
            ),
            AttachMode::Auto => match program.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(link) => (link, AttachedMode::Native),
                Err(native_error) => {
                    log::warn!(
                        "{interface}: native XDP refused ({native_error}); falling back to generic mode, which runs later in the stack and costs more per packet"
                    );
                    (
                        program
                            .attach_to_if_index(ifindex, XdpMode::Skb)
                            .map_err(attach_error)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        if let Some(dir) = self.pin_dir.clone() {
            let path = dir.join(format!("{LINK_PIN_PREFIX}{attached}-{interface}"));
            let link = self
                .program_mut()
                .take_link(link)
                .map_err(DataplaneError::Program)?;
            let link = FdLink::try_from(link).map_err(|source| DataplaneError::Link {
                path: path.clone(),
                source,
            })?;
            let _: PinnedLink = link.pin(&path).map_err(pin_error(&path))?;
        } else {
            let _: Option<_> = self.owned_links.insert(interface.to_owned(), link);
        }
        let _: Option<_> = self.attachments.insert(
            interface.to_owned(),
            Attachment {
                ifindex,
                mode: attached,
                slot,
            },
        );
        Ok(attached)
    }

    /// Detach from `interface` (and delete its link pin).
    ///
    /// # Errors
    /// When xdpguard is not attached there.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let attachment = self
            .attachments
            .remove(interface)
            .ok_or_else(|| DataplaneError::NotAttached(interface.to_owned()))?;
        if let Some(link) = self.owned_links.remove(interface) {
            self.program_mut()
                .detach(link)
                .map_err(DataplaneError::Program)?;
        }
        if let Some(dir) = &self.pin_dir {
            let path = dir.join(format!("{LINK_PIN_PREFIX}{}-{interface}", attachment.mode));
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Interfaces xdpguard is attached to.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, Attachment)> {
        self.attachments
            .iter()
            .map(|(name, attachment)| (name.as_str(), *attachment))
    }
}
