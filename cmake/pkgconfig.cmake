# Runs at install time: writes libsan.pc and libsan-static.pc for the prefix being installed to
# (cmake --install --prefix DIR chooses it after configuration), so that their paths, and the rpath
# programs get from libsan.pc, are the plain absolute paths of the installed tree.
set(SAN_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
foreach(dir LIBDIR INCLUDEDIR)
  set(SAN_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  if(NOT IS_ABSOLUTE "${SAN_PC_${dir}}")
    set(SAN_PC_${dir} "${CMAKE_INSTALL_PREFIX}/${SAN_PC_${dir}}")
  endif()
endforeach()
foreach(pc libsan libsan-static)
  configure_file("${SAN_SOURCE_DIR}/cmake/${pc}.pc.in" "${SAN_BINARY_DIR}/pkgconfig/${pc}.pc" @ONLY)
  file(INSTALL DESTINATION "${SAN_PC_LIBDIR}/pkgconfig" TYPE FILE
       FILES "${SAN_BINARY_DIR}/pkgconfig/${pc}.pc")
endforeach()
